#!/usr/bin/env python3
"""A minimal kiln model server that needs nothing but Python's standard library.

kilnd runs `<image> serve` with the model read-only at /opt/ml/model and talks to it in the
SageMaker protocol (docs/container-contract.md):

  GET  /ping          200 once the model is loaded (kilnd waits for it before any request)
  POST /invocations   Content-Type text/csv: one row a line, no header, the feature columns in
                      training order without the label; the answer is one prediction a line,
                      in order

It listens on the unix socket $KILN_SOCKET when kilnd sets it (the container needs no network),
else on TCP port $SAGEMAKER_BIND_TO_PORT (default 8080). SIGTERM finishes the requests in flight
and exits 0.

Run locally: KILN_SOCKET=/tmp/s.sock python3 server.py serve --model-dir /tmp/ml/model
"""

import argparse
import csv
import http.server
import io
import json
import os
import signal
import socketserver
import sys
import threading

from trainer import predict


class Handler(http.server.BaseHTTPRequestHandler):
    model = None
    protocol_version = "HTTP/1.1"  # keep-alive: kilnd sends many requests on one connection

    def do_GET(self):
        if self.path == "/ping":
            self.answer(200, "text/plain", b"")
        else:
            self.answer(404, "text/plain", b"not found\n")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/invocations":
            self.answer(404, "text/plain", b"not found\n")
            return
        if not self.headers.get("Content-Type", "").startswith("text/csv"):
            self.answer(415, "text/plain", b"want Content-Type: text/csv\n")
            return
        want = len(self.model["features"])
        out = []
        for n, row in enumerate(csv.reader(io.StringIO(body.decode("utf-8"))), start=1):
            if not row:
                continue
            try:
                if len(row) != want:
                    raise ValueError("%d values, want %d" % (len(row), want))
                out.append(predict(self.model, [float(v) for v in row]))
            except ValueError as e:
                self.answer(400, "text/plain", ("row %d: %s\n" % (n, e)).encode())
                return
        self.answer(200, "text/csv", "".join(p + "\n" for p in out).encode())

    def answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        # A unix socket's peer has no address; the default log line would fail on it.
        sys.stderr.write("%s\n" % (fmt % args))


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TCPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--model-dir", default="/opt/ml/model")
    args = parser.parse_args()
    with open(os.path.join(args.model_dir, "model.json"), encoding="utf-8") as f:
        Handler.model = json.load(f)

    sock = os.environ.get("KILN_SOCKET")
    if sock:
        if os.path.exists(sock):
            os.remove(sock)  # a socket left by an earlier run of this container
        server = UnixServer(sock, Handler)
        where = sock
    else:
        port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
        server = TCPServer(("", port), Handler)
        where = "port %d" % port

    # SIGTERM: stop accepting, let serve_forever return, exit 0. shutdown() waits for
    # serve_forever, so it runs on another thread than the one the handler interrupts.
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
    print("serving %d features on %s" % (len(Handler.model["features"]), where), flush=True)
    server.serve_forever()
    server.server_close()
    print("stopped by SIGTERM", flush=True)


if __name__ == "__main__":
    main()
