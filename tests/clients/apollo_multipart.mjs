// Apollo Client 4 with its default HttpLink against the live gateway: a subscription, which
// HttpLink sends as a multipart subscription (`Accept: multipart/mixed;...subscriptionSpec=1.0`),
// followed until the server completes it; then another request is dropped after a few
// events and resumed with `afterSeq`, as a client does after losing its connection. The last line printed is the JSON document
// tests/e2e/test_http_subscription_clients.py asserts on.
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';

const url = process.env.LUMI_URL;
const token = process.env.LUMI_TOKEN;
const id = process.env.LUMI_REQUEST_ID;
if (!url || !token || !id) throw new Error('LUMI_URL, LUMI_TOKEN and LUMI_REQUEST_ID are required');
setTimeout(() => {
  console.log(JSON.stringify({ error: 'timed out' }));
  process.exit(2);
}, 60_000).unref();

let contentType = null;
async function recordingFetch(input, init) {
  const response = await fetch(input, init);
  contentType = response.headers.get('content-type');
  return response;
}

const client = new ApolloClient({
  link: new HttpLink({
    uri: url,
    headers: { authorization: `Bearer ${token}` },
    fetch: recordingFetch,
  }),
  cache: new InMemoryCache(),
});

const FOLLOW = gql`
  subscription Follow($id: ID!, $afterSeq: Int) {
    requestUpdates(id: $id, afterSeq: $afterSeq) {
      seq
      status
    }
  }
`;

// Follows the request until the server completes the stream, or until `dropAfter` events
// have come, when it unsubscribes (Apollo aborts the fetch: the connection drops).
function follow(variables, dropAfter = Infinity) {
  const events = [];
  return new Promise((resolve, reject) => {
    const subscription = client.subscribe({ query: FOLLOW, variables }).subscribe({
      next(result) {
        if (result.error) return reject(result.error);
        events.push(result.data.requestUpdates);
        if (events.length >= dropAfter) {
          subscription.unsubscribe();
          resolve({ events, completed: false });
        }
      },
      error: reject,
      complete: () => resolve({ events, completed: true }),
    });
  });
}

const followed = await follow({ id });
let resumed = null;
let dropped = null;
const resumeId = process.env.LUMI_RESUME_REQUEST_ID;
if (resumeId) {
  dropped = await follow({ id: resumeId }, Number(process.env.LUMI_DROP_AFTER || '3'));
  const last = dropped.events[dropped.events.length - 1].seq;
  resumed = await follow({ id: resumeId, afterSeq: last });
}
console.log(JSON.stringify({ ...followed, dropped, resumed, contentType }));
