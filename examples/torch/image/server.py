#!/usr/bin/env python3
"""kiln's torch-digits model server: the standard library's http.server around the CNN.

kilnd runs `<image> serve` with the model read-only at /opt/ml/model and speaks SageMaker
or KServe v2 to it (docs/container-contract.md):

  GET  /ping, /v2/health/ready, /v2/health/live   200 once the model is loaded
  POST /invocations           Content-Type application/x-image: the bytes of one PNG or JPEG;
                              the answer is one line, the predicted label
  POST /v2/models/<name>/infer
                              {"inputs":[{"name":"input","datatype":"BYTES","shape":[n],
                              "data":["<base64 image>", ...]}]} -> {"outputs":[{"name":"label",
                              "datatype":"BYTES","shape":[n],"data":["7", ...]}]}

It listens on the unix socket $KILN_SOCKET when kilnd sets it, else on TCP port
$SAGEMAKER_BIND_TO_PORT (default 8080). SIGTERM finishes the requests in flight and exits 0.

Run locally: KILN_SOCKET=/tmp/s.sock python3 server.py serve --model-dir /tmp/ml/model
"""

import argparse
import base64
import binascii
import http.server
import json
import os
import re
import signal
import socketserver
import sys
import threading

import torch
from PIL import UnidentifiedImageError

import digitsnet

MAX_BODY = 64 << 20
V2_INFER = re.compile(r"^/v2/models/([^/]+)/infer$")


class Model:
    def __init__(self, model_dir):
        self.net, self.classes, self.size = digitsnet.load(model_dir)
        self.lock = threading.Lock()  # one forward at a time: torch's own threads do the rest

    def predict(self, images):
        """Labels of a list of image bytes; ValueError naming the image (1-based) that is not one."""
        xs = []
        for i, b in enumerate(images, start=1):
            try:
                xs.append(digitsnet.load_image(b, self.size))
            except UnidentifiedImageError:
                raise ValueError("image %d: not a PNG or JPEG image (%d bytes)" % (i, len(b))) from None
            except Exception as e:
                raise ValueError("image %d: not a decodable image: %s" % (i, e)) from None
        if not xs:
            return []
        with self.lock, torch.no_grad():
            pred = self.net(torch.stack(xs)).argmax(1).tolist()
        return [self.classes[p] for p in pred]


class Handler(http.server.BaseHTTPRequestHandler):
    model = None
    protocol_version = "HTTP/1.1"  # keep-alive: kilnd sends many requests on one connection

    def do_GET(self):
        if self.path in ("/ping", "/v2/health/ready", "/v2/health/live"):
            self.answer(200, "text/plain", b"")
        else:
            self.answer(404, "text/plain", b"not found\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self.answer(413, "text/plain", b"body larger than %d bytes\n" % MAX_BODY)
            return
        body = self.rfile.read(length)
        m = V2_INFER.match(self.path)
        if self.path == "/invocations":
            self.invocations(body)
        elif m:
            self.infer(m.group(1), body)
        else:
            self.answer(404, "text/plain", b"not found\n")

    def invocations(self, body):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype not in ("application/x-image", "image/png", "image/jpeg"):
            self.answer(415, "text/plain", b"want Content-Type: application/x-image (one PNG or JPEG)\n")
            return
        try:
            label = self.model.predict([body])[0]
        except ValueError as e:
            self.answer(400, "text/plain", ("%s\n" % e).encode())
            return
        self.answer(200, "text/plain", (label + "\n").encode())

    def infer(self, name, body):
        try:
            req = json.loads(body)
            inp = req["inputs"][0]
            if inp.get("datatype") != "BYTES":
                raise ValueError("input datatype %r: want BYTES (base64 images)" % inp.get("datatype"))
            data = inp["data"]
            if not isinstance(data, list) or (inp.get("shape") and inp["shape"][0] != len(data)):
                raise ValueError("input shape %r does not match %d data items" % (inp.get("shape"), len(data)))
            images = []
            for i, s in enumerate(data, start=1):
                try:
                    images.append(base64.b64decode(s, validate=True))
                except (binascii.Error, TypeError) as e:
                    raise ValueError("image %d: not base64: %s" % (i, e)) from None
            labels = self.model.predict(images)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            msg = "%s: %s" % (type(e).__name__, e) if not isinstance(e, ValueError) else str(e)
            self.answer(400, "application/json", json.dumps({"error": msg}).encode())
            return
        out = {"model_name": name, "outputs": [{"name": "label", "datatype": "BYTES",
                                                "shape": [len(labels)], "data": labels}]}
        self.answer(200, "application/json", json.dumps(out).encode())

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
    torch.set_num_threads(1)  # one forward of a few small images: see trainer.py on threads
    Handler.model = Model(args.model_dir)

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
    print("serving %d classes (%s) on %s" % (len(Handler.model.classes), " ".join(Handler.model.classes), where),
          flush=True)
    server.serve_forever()
    server.server_close()
    print("stopped by SIGTERM", flush=True)


if __name__ == "__main__":
    main()
