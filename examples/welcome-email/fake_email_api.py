#!/usr/bin/env python3
"""A fake email provider for the welcome-email demo: `POST /v1/emails` with
`Authorization: Bearer <key>` "sends" the JSON email (prints it and appends it to a file),
once per `Idempotency-Key`, and answers `{"id": "em_<n>"}`, as real providers do.

    python3 fake_email_api.py --port 8025 --key test-key [--out sent.jsonl] [--fail 500,500]

`--fail` answers the first requests with those statuses (a 5xx is retried by the job, a
4xx dead-letters it). Listens on 127.0.0.1 only. Standard library only.
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--key", required=True, help="the bearer token requests must carry")
    parser.add_argument("--out", default="sent.jsonl", help="where sent emails are appended")
    parser.add_argument("--fail", default="", help="statuses for the first requests, like 500,500")
    args = parser.parse_args()
    script = [int(s) for s in args.fail.split(",") if s]
    sent: dict = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if self.path != "/v1/emails":
                return self.answer(404, {"error": "no such endpoint"})
            if self.headers.get("authorization") != f"Bearer {args.key}":
                return self.answer(401, {"error": "bad token"})
            with lock:
                if script:
                    status = script.pop(0)
                    if status != 200:
                        return self.answer(status, {"error": f"scripted {status}"})
                key = self.headers.get("idempotency-key") or ""
                if key and key in sent:
                    return self.answer(200, {"id": sent[key], "repeat": True})
                email_id = f"em_{len(sent) + 1}"
                sent[key or email_id] = email_id
                email = json.loads(body or b"null")
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"id": email_id, "key": key, "email": email}) + "\n")
            print(f"sent {email_id} to {email.get('to') if isinstance(email, dict) else '?'}", flush=True)
            return self.answer(200, {"id": email_id})

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"fake email API on http://127.0.0.1:{args.port}/v1/emails", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
