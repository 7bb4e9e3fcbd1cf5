// Verify a hookd `toss` webhook with node:crypto alone.
//
//     WEBHOOK_SECRET=... node verify_toss.mjs request.json
//
// request.json is a captured request, {"headers": {...}, "body": "..."}: each line that
// `hookd listen --json` prints is one. Exits 0 if the signature is valid, 1 if not.

import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

const TOLERANCE_MS = 5 * 60 * 1000;

// True if `body` (the raw body as received, a Buffer or string) was signed with `secret`
// within 5 minutes.
export function verify(secret, headers, body) {
  const time = headers["tosspayments-webhook-transmission-time"];
  const signature = headers["tosspayments-webhook-signature"];
  if (!time || !signature) return false;
  // Optional, and recommended: refuse replays of old requests.
  const sent = Date.parse(time);
  if (Number.isNaN(sent) || Math.abs(Date.now() - sent) > TOLERANCE_MS) return false;
  const expected = createHmac("sha256", secret)
    .update(Buffer.concat([Buffer.from(body), Buffer.from(`:${time}`)]))
    .digest();
  const given = Buffer.from(signature.trim(), "hex");
  return given.length === expected.length && timingSafeEqual(given, expected);
}

if (!process.env.WEBHOOK_SECRET) {
  console.error("set WEBHOOK_SECRET to the endpoint's secret");
  process.exit(2);
}
const request = JSON.parse(readFileSync(process.argv[2] ?? 0, "utf8"));
const headers = Object.fromEntries(
  Object.entries(request.headers).map(([name, value]) => [name.toLowerCase(), value]),
);
if (!verify(process.env.WEBHOOK_SECRET, headers, Buffer.from(request.body, "utf8"))) {
  console.error("invalid: signature or time does not match");
  process.exit(1);
}
console.log(`valid: ${headers["webhook-id"]}: ${request.body}`);
