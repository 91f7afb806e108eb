// Apollo Client 4 over HTTP, as a frontend team sets it up, against the live gateway:
// - createPersistedQueryLink (automatic persisted queries, hashed queries over GET) in
//   front of HttpLink: a query twice (a miss, then a hit) and a mutation;
// - BatchHttpLink: a query and a mutation sent together, which it sends as one batch.
// A bearer token on every request. The last line printed is the JSON document that
// tests/e2e/test_http_clients.py asserts on; `requests` lists what went over the wire.
import { createHash } from 'node:crypto';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { BatchHttpLink } from '@apollo/client/link/batch-http';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries';

const url = process.env.LUMI_URL;
const token = process.env.LUMI_TOKEN;
if (!url || !token) throw new Error('LUMI_URL and LUMI_TOKEN are required');
const headers = { authorization: `Bearer ${token}` };

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

// A fetch that notes what each request carried and how it was answered.
function recordingFetch(requests) {
  return async (input, init = {}) => {
    const response = await fetch(input, init);
    const target = new URL(typeof input === 'string' ? input : input.url);
    const body = init.body ? JSON.parse(init.body) : null;
    const params = Object.fromEntries(target.searchParams);
    const operations = Array.isArray(body) ? body : [body ?? params];
    requests.push({
      method: init.method ?? 'GET',
      batch: Array.isArray(body) ? body.length : null,
      withQuery: operations.map((op) => Boolean(op.query)),
      status: response.status,
      contentType: response.headers.get('content-type'),
      cacheControl: response.headers.get('cache-control'),
    });
    return response;
  };
}

function client(link) {
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

async function persisted() {
  const requests = [];
  const link = ApolloLink.from([
    createPersistedQueryLink({
      sha256: (text) => createHash('sha256').update(text).digest('hex'),
      useGETForHashedQueries: true,
    }),
    new HttpLink({ uri: url, headers, fetch: recordingFetch(requests) }),
  ]);
  const apollo = client(link);
  const first = await apollo.query({ query: ME, fetchPolicy: 'network-only' });
  const second = await apollo.query({ query: ME, fetchPolicy: 'network-only' });
  const renamed = await apollo.mutate({ mutation: RENAME, variables: { name: 'Apollo APQ' } });
  return {
    query: first.data,
    again: second.data,
    mutation: renamed.data,
    requests,
  };
}

async function batched() {
  const requests = [];
  const link = new BatchHttpLink({
    uri: url,
    headers,
    fetch: recordingFetch(requests),
    batchMax: 10,
    batchInterval: 20,
  });
  const apollo = client(link);
  const [query, mutation] = await Promise.all([
    apollo.query({ query: ME, fetchPolicy: 'network-only' }),
    apollo.mutate({ mutation: RENAME, variables: { name: 'Apollo Batch' } }),
  ]);
  return { query: query.data, mutation: mutation.data, requests };
}

console.log(JSON.stringify({ persisted: await persisted(), batched: await batched() }));
