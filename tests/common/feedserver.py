"""A blocklist feed for tests/feeds.rs, over HTTPS on loopback.

Serves DIR/list with a strong ETag, answering 304 to an If-None-Match that matches, and
appends each request's If-None-Match (or -) to DIR/hits. DIR/mode, read at each request,
makes it misbehave: 500 answers HTTP 500; huge sends a list of 64 MiB and a byte; slow answers nothing for 30 s; truncate sends the
list whatever the ETag, promising 100 bytes more than it sends, then closes.

Usage: feedserver.py DIR CERT KEY; prints the port it listens on.
"""

import hashlib
import http.server
import os
import ssl
import sys
import time

DIR, CERT, KEY = sys.argv[1:4]


def read(name, default=b""):
    try:
        with open(os.path.join(DIR, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return default


class Feed(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        mode = read("mode", b"ok").strip().decode()
        with open(os.path.join(DIR, "hits"), "a") as hits:
            hits.write((self.headers.get("If-None-Match") or "-") + "\n")
        if mode == "slow":
            time.sleep(30)
            return
        if mode == "huge":
            # 64 MiB and one byte more of a list: more than a feed may be.
            size = (64 << 20) + 1
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            line = b"203.0.113.1\n" * 4096
            sent = 0
            try:
                while sent < size:
                    chunk = line[: size - sent]
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass
            return
        if mode == "500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = read("list")
        etag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
        if self.headers.get("If-None-Match") == etag and mode != "truncate":
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        length = len(body) + (100 if mode == "truncate" else 0)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        if mode == "truncate":
            self.close_connection = True

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Feed)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
