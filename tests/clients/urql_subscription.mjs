// @urql/core with `fetchSubscriptions: true` against the live gateway: a subscription over
// HTTP (urql asks for `text/event-stream, multipart/mixed`), followed until the stream
// ends. The last line printed is the JSON document
// tests/e2e/test_http_subscription_clients.py asserts on.
import { Client, fetchExchange, gql } from '@urql/core';
import { onEnd, pipe, subscribe } from 'wonka';

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

const client = new Client({
  url,
  exchanges: [fetchExchange],
  fetchSubscriptions: true,
  fetchOptions: { headers: { authorization: `Bearer ${token}` } },
  fetch: recordingFetch,
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
let last = null;
const completed = await new Promise((resolve, reject) => {
  pipe(
    client.subscription(FOLLOW, { id }),
    onEnd(() => resolve(true)),
    subscribe((result) => {
      if (result.error) {
        reject(result.error);
      } else if (!(result.hasNext === false && result.data === last)) {
        // urql ends a stream with one more result, `hasNext: false`, holding the data
        // object it already had: not another event.
        last = result.data;
        events.push(result.data.requestUpdates);
      }
    }),
  );
});
console.log(JSON.stringify({ events, completed, contentType }));
