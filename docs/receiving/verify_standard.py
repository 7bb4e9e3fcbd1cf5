"""Verify a hookd `standard` webhook with the official `standardwebhooks` package.

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... python3 verify_standard.py request.json

request.json is a captured request, {"headers": {...}, "body": "..."}: each line that
`hookd listen --json` prints is one. Exits 0 if the signature is valid, 1 if not.
"""

import json
import os
import sys

from standardwebhooks import Webhook, WebhookVerificationError


def verify(secret: str, headers: dict[str, str], body: bytes):
    """The parsed payload if the request is genuine; raises WebhookVerificationError if not.

    `body` must be the raw bytes received, before any JSON parsing. The library also
    refuses a webhook-timestamp more than 5 minutes away from now (replays).
    """
    return Webhook(secret).verify(body, headers)


def main() -> int:
    if "WEBHOOK_SECRET" not in os.environ:
        print("set WEBHOOK_SECRET to the endpoint's secret", file=sys.stderr)
        return 2
    source = open(sys.argv[1], encoding="utf-8") if len(sys.argv) > 1 else sys.stdin
    request = json.load(source)
    headers = {name.lower(): value for name, value in request["headers"].items()}
    try:
        payload = verify(os.environ["WEBHOOK_SECRET"], headers, request["body"].encode())
    except WebhookVerificationError as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 1
    print(f"valid: {headers['webhook-id']}: {json.dumps(payload, ensure_ascii=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
