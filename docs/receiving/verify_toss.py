"""Verify a hookd `toss` webhook with the standard library alone.

    WEBHOOK_SECRET=... python3 verify_toss.py request.json

request.json is a captured request, {"headers": {...}, "body": "..."}: each line that
`hookd listen --json` prints is one. Exits 0 if the signature is valid, 1 if not.
"""

import hashlib
import hmac
import json
import os
import sys
from datetime import datetime, timedelta, timezone

TOLERANCE = timedelta(minutes=5)


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """True if `body` (the raw bytes received) was signed with `secret` within 5 minutes."""
    time = headers.get("tosspayments-webhook-transmission-time", "")
    signature = headers.get("tosspayments-webhook-signature", "")
    if not time or not signature:
        return False
    # Optional, and recommended: refuse replays of old requests.
    try:
        sent = datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError:
        return False
    if abs(datetime.now(timezone.utc) - sent) > TOLERANCE:
        return False
    expected = hmac.new(secret.encode(), body + b":" + time.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


def main() -> int:
    if "WEBHOOK_SECRET" not in os.environ:
        print("set WEBHOOK_SECRET to the endpoint's secret", file=sys.stderr)
        return 2
    source = open(sys.argv[1], encoding="utf-8") if len(sys.argv) > 1 else sys.stdin
    request = json.load(source)
    headers = {name.lower(): value for name, value in request["headers"].items()}
    if not verify(os.environ["WEBHOOK_SECRET"], headers, request["body"].encode()):
        print("invalid: signature or time does not match", file=sys.stderr)
        return 1
    print(f"valid: {headers.get('webhook-id')}: {request['body']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
