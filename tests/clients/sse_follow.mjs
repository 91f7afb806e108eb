// The graphql-sse client in "distinct connections mode" (one POST per operation) against the
// live gateway: it follows LUMI_REQUEST_ID to its end, then follows LUMI_RESUME_REQUEST_ID,
// drops that stream after LUMI_DROP_AFTER events and resubscribes: its `headers` function
// sends the last `seq` it saw as Last-Event-ID, the header the SSE `id:` of each event
// is for. The last line printed is the JSON document
// tests/e2e/test_http_subscription_clients.py asserts on.
import { createClient } from 'graphql-sse';

const url = process.env.LUMI_URL;
const token = process.env.LUMI_TOKEN;
const followId = process.env.LUMI_REQUEST_ID;
const resumeId = process.env.LUMI_RESUME_REQUEST_ID;
const dropAfter = Number(process.env.LUMI_DROP_AFTER ?? 3);
if (!url || !token || !followId || !resumeId) {
  throw new Error('LUMI_URL, LUMI_TOKEN, LUMI_REQUEST_ID and LUMI_RESUME_REQUEST_ID are required');
}
setTimeout(() => {
  console.log(JSON.stringify({ error: 'timed out' }));
  process.exit(2);
}, 60_000).unref();

const FOLLOW = `
  subscription Follow($id: ID!) {
    requestUpdates(id: $id) {
      seq
      status
    }
  }
`;

let lastSeq = null; // the Last-Event-ID of the next connection
const client = createClient({
  url,
  singleConnection: false,
  headers: () => ({
    authorization: `Bearer ${token}`,
    ...(lastSeq === null ? {} : { 'last-event-id': String(lastSeq) }),
  }),
});

// The events of one subscription until the server completes it, or until `dropAfter`
// events when given (the client then disposes of it, which aborts its request).
function follow(id, dropAt = Infinity) {
  return new Promise((resolve, reject) => {
    const events = [];
    let done = false;
    const finish = (completed) => {
      if (!done) {
        done = true;
        resolve({ events, completed });
      }
    };
    const dispose = client.subscribe(
      { query: FOLLOW, variables: { id } },
      {
        next(result) {
          // Once it drops the stream, results the client had read ahead are ignored.
          if (done) return;
          if (result.errors) {
            reject(new Error(JSON.stringify(result.errors)));
            return;
          }
          const event = result.data.requestUpdates;
          events.push(event);
          lastSeq = event.seq;
          if (events.length === dropAt) {
            finish(false);
            dispose();
          }
        },
        error: reject,
        complete: () => finish(true),
      },
    );
  });
}

const followed = await follow(followId);
lastSeq = null;
const dropped = await follow(resumeId, dropAfter);
const resumed = await follow(resumeId);
client.dispose();
console.log(JSON.stringify({ followed, dropped, resumed }));
