// graphql-http's auditServer against the live gateway: every audit of the
// GraphQL-over-HTTP specification, printed one per line, then all of them as one JSON
// document (the last line) for tests/e2e/test_http_clients.py.
import { auditServer } from 'graphql-http';

const url = process.env.LUMI_URL;
if (!url) throw new Error('LUMI_URL is required');

const results = await auditServer({ url });
const audits = [];
for (const result of results) {
  const audit = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    audit.reason = result.reason;
    audit.httpStatus = result.response.status;
    audit.body = (await result.response.text()).slice(0, 500);
  }
  console.log(JSON.stringify(audit));
  audits.push(audit);
}
console.log(JSON.stringify({ audits }));
