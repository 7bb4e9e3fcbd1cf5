// Verify a hookd `standard` webhook with the official `standardwebhooks` package.
//
//     npm install standardwebhooks
//     WEBHOOK_SECRET=whsec_... node verify_standard.mjs request.json
//
// request.json is a captured request, {"headers": {...}, "body": "..."}: each line that
// `hookd listen --json` prints is one. Exits 0 if the signature is valid, 1 if not.

import { readFileSync } from "node:fs";
import { Webhook, WebhookVerificationError } from "standardwebhooks";

// The parsed payload if the request is genuine; throws WebhookVerificationError if not.
// `body` must be the raw body as received (in Express: express.raw({ type: "application/json" })),
// not a re-serialized JSON object. The library also refuses a webhook-timestamp more than
// 5 minutes away from now (replays).
export function verify(secret, headers, body) {
  return new Webhook(secret).verify(body, headers);
}

if (!process.env.WEBHOOK_SECRET) {
  console.error("set WEBHOOK_SECRET to the endpoint's secret");
  process.exit(2);
}
const request = JSON.parse(readFileSync(process.argv[2] ?? 0, "utf8"));
const headers = Object.fromEntries(
  Object.entries(request.headers).map(([name, value]) => [name.toLowerCase(), value]),
);
try {
  const payload = verify(process.env.WEBHOOK_SECRET, headers, Buffer.from(request.body, "utf8"));
  console.log(`valid: ${headers["webhook-id"]}: ${JSON.stringify(payload)}`);
} catch (e) {
  if (!(e instanceof WebhookVerificationError)) throw e;
  console.error(`invalid: ${e.message}`);
  process.exit(1);
}
