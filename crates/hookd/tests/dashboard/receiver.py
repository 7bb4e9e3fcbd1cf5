#!/usr/bin/env python3
"""A webhook receiver for the dashboard test whose answer can be switched.

    python3 receiver.py PORT

- `POST /_control/fail` makes it answer 500 to deliveries, `POST /_control/ok` 200;
  `GET /_control` says which ("fail" or "ok"). It starts failing.
- `POST /always-ok/...`: always 200 (a healthy endpoint beside the switched one).
- Any other `POST` is a delivery: 500 "upstream exploded" while failing, else 200.

Prints "ready" on stdout once it listens on 127.0.0.1:PORT.
"""

import http.server
import sys
import threading

MODE = {"value": "fail"}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/_control":
            with LOCK:
                self.answer(200, MODE["value"])
        else:
            self.answer(404, "not found")

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        if self.path in ("/_control/ok", "/_control/fail"):
            with LOCK:
                MODE["value"] = self.path.rsplit("/", 1)[1]
            self.answer(200, MODE["value"])
        elif self.path.startswith("/always-ok"):
            self.answer(200, '{"received": true}')
        else:
            with LOCK:
                failing = MODE["value"] == "fail"
            if failing:
                self.answer(500, "upstream exploded")
            else:
                self.answer(200, '{"received": true}')

    def log_message(self, fmt, *args):
        sys.stderr.write("receiver: " + (fmt % args) + "\n")


def main():
    port = int(sys.argv[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
