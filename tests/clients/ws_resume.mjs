// The graphql-ws client (graphql-transport-ws), default settings: follow one request,
// drop the subscription mid-flight, resume with afterSeq, then resume at the end.
// Env: LUMI_WS (ws://.../graphql), LUMI_TOKEN, LUMI_REQUEST, LUMI_STOP_AFTER (events).
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const FOLLOW = `subscription Follow($id: ID!, $afterSeq: Int!) {
  requestUpdates(id: $id, afterSeq: $afterSeq) { seq status }
}`;
const { LUMI_WS, LUMI_TOKEN, LUMI_REQUEST } = process.env;
const stopAfter = Number(process.env.LUMI_STOP_AFTER ?? "2");

function follow(client, afterSeq, limit) {
  // Events until the server completes the subscription, or `limit` events (then the
  // client unsubscribes, as a page does when its socket is lost).
  return new Promise((resolve, reject) => {
    const events = [];
    const timer = setTimeout(() => reject(new Error(`no end after ${JSON.stringify(events)}`)), 30000);
    const dispose = client.subscribe(
      { query: FOLLOW, variables: { id: LUMI_REQUEST, afterSeq } },
      {
        next: (result) => {
          if (result.errors) return reject(new Error(JSON.stringify(result.errors)));
          events.push(result.data.requestUpdates);
          if (limit !== undefined && events.length >= limit) {
            clearTimeout(timer);
            dispose();
            resolve({ events, completed: false });
          }
        },
        error: (error) => { clearTimeout(timer); reject(error); },
        complete: () => { clearTimeout(timer); resolve({ events, completed: true }); },
      },
    );
  });
}

const client = createClient({
  url: LUMI_WS,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: `Bearer ${LUMI_TOKEN}` },
});
try {
  const first = await follow(client, 0, stopAfter);
  const lastSeen = first.events.at(-1).seq;
  const rest = await follow(client, lastSeen);
  const atEnd = await follow(client, rest.events.at(-1).seq);
  console.log(JSON.stringify({ first, rest, atEnd }));
} finally {
  await client.dispose();
}
