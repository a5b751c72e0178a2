#!/usr/bin/env python3
"""A Standard Webhooks receiver for trying enac-cd's notifications by hand.

    BENCH_NOTIFY_SECRET=whsec_… examples/report_receiver.py PORT LOG [FAIL_FIRST]

Listens on 127.0.0.1:PORT and appends one JSON line per request to LOG:
arrival time (Unix seconds, float), path, webhook-id, type, job id, whether
the signature holds (HMAC-SHA256 over "{id}.{timestamp}.{body}" with the key
after `whsec_`), and the status it answered. Requests to /flaky are answered
503 for the first FAIL_FIRST (default 0) requests of each job, then 204, so
that the service's retries can be watched; every other path gets 204.
Python 3 standard library only; scripts/bench-reports.sh uses it.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["BENCH_NOTIFY_SECRET"]
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))


def signature_holds(headers, body):
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signed = f"{webhook_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
    # The header may list several space-separated signatures.
    offered = headers.get("webhook-signature", "").split()
    return any(
        item.startswith("v1,") and hmac.compare_digest(item[3:], expected) for item in offered
    )


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would
    lock = threading.Lock()
    tries = Counter()
    log = None
    fail_first = 0

    def do_POST(self):
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            message = json.loads(body)
            kind, job_id = message.get("type"), message.get("data", {}).get("job_id")
        except (ValueError, AttributeError):
            kind = job_id = None
        with Receiver.lock:
            Receiver.tries[job_id] += 1
            failing = self.path == "/flaky" and Receiver.tries[job_id] <= Receiver.fail_first
            status = 503 if failing else 204
            record = {
                "t": arrived,
                "path": self.path,
                "id": self.headers.get("webhook-id"),
                "type": kind,
                "job": job_id,
                "sig": signature_holds(self.headers, body),
                "status": status,
            }
            Receiver.log.write(json.dumps(record) + "\n")
            Receiver.log.flush()
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    # The default listen backlog (5) refuses connections when the service
    # delivers to many jobs at once: the benchmark would measure the receiver.
    request_queue_size = 512


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    Receiver.fail_first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    Receiver.log = open(path, "a", encoding="utf-8")
    Server(("127.0.0.1", port), Receiver).serve_forever()


if __name__ == "__main__":
    main()
