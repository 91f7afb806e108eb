// @urql/core's Client with its defaults (queries over GET since urql 4, within the URL
// length limit) against the live gateway: a query and a mutation with a bearer token.
// The last line printed is the JSON document tests/e2e/test_http_clients.py asserts on;
// `requests` lists what went over the wire.
import { Client, cacheExchange, fetchExchange, gql } from '@urql/core';

const url = process.env.LUMI_URL;
const token = process.env.LUMI_TOKEN;
if (!url || !token) throw new Error('LUMI_URL and LUMI_TOKEN are required');

const requests = [];
async function recordingFetch(input, init = {}) {
  const response = await fetch(input, init);
  requests.push({
    method: init.method ?? 'GET',
    status: response.status,
    contentType: response.headers.get('content-type'),
  });
  return response;
}

const client = new Client({
  url,
  exchanges: [cacheExchange, fetchExchange],
  fetchOptions: { headers: { authorization: `Bearer ${token}` } },
  fetch: recordingFetch,
});

const ME = gql`
  query Me {
    me {
      id
      displayName
    }
  }
`;
const RENAME = gql`
  mutation Rename($name: String!) {
    updateMe(input: { displayName: $name }) {
      id
      displayName
    }
  }
`;

function outcome(result) {
  return { data: result.data ?? null, error: result.error ? result.error.message : null };
}

const query = await client.query(ME, {}).toPromise();
const mutation = await client.mutation(RENAME, { name: 'urql' }).toPromise();
console.log(JSON.stringify({ query: outcome(query), mutation: outcome(mutation), requests }));
