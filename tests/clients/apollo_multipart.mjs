// Apollo Client 4 with its default HttpLink against the live gateway: a subscription, which
// HttpLink sends as a multipart subscription (`Accept: multipart/mixed;...subscriptionSpec=1.0`),
// followed until the server completes it. The last line printed is the JSON document
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
  subscription Follow($id: ID!) {
    requestUpdates(id: $id) {
      seq
      status
    }
  }
`;

const events = [];
const completed = await new Promise((resolve, reject) => {
  client.subscribe({ query: FOLLOW, variables: { id } }).subscribe({
    next(result) {
      if (result.error) reject(result.error);
      else events.push(result.data.requestUpdates);
    },
    error: reject,
    complete: () => resolve(true),
  });
});
console.log(JSON.stringify({ events, completed, contentType }));
