"""A test host of the network tests' small internet (see netlab.py), run inside its network
namespace: HTTP and HTTPS servers and, optionally, a DNS server for the lab's names.

  GET /hello.txt      a fixed greeting
  GET /whoami         the address the request arrived at (which host of the lab answered)
  GET /headers        the request's headers, as JSON
  GET /bytes/N        N bytes (bounded), for throughput measurements

Its DNS server answers A (and ANY) with the name's address, and MX with the name itself and its
address as additional data."""

import argparse
import http.server
import json
import socket
import socketserver
import ssl
import struct
import threading

MAX_BYTES = 1 << 30


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a head and a body are two writes: no delayed-ACK stalls

    def log_message(self, *args):
        pass

    def _send(self, body, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if self.path == "/hello.txt":
            return self._send(b"hello from the test internet\n")
        if self.path == "/whoami":
            return self._send(self.connection.getsockname()[0].encode() + b"\n")
        if self.path == "/headers":
            return self._send(json.dumps({k.lower(): v for k, v in self.headers.items()}).encode(),
                              "application/json")
        if self.path.startswith("/bytes/"):
            n = min(int(self.path[len("/bytes/"):]), MAX_BYTES)
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                self.wfile.write(chunk[:min(n, len(chunk))])
                n -= min(n, len(chunk))
            return
        self.send_error(404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self._send(str(len(data)).encode() + b"\n")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_http(port, tls=None):
    srv = Server(("0.0.0.0", port), Handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def parse_name(msg, at):
    labels = []
    while msg[at]:
        n = msg[at]
        labels.append(msg[at + 1:at + 1 + n].decode().lower())
        at += 1 + n
    return ".".join(labels), at + 1


def serve_dns(addr, zone):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))

    def loop():
        while True:
            msg, peer = s.recvfrom(4096)
            try:
                qid, flags = struct.unpack("!HH", msg[:4])
                name, end = parse_name(msg, 12)
                qtype, _ = struct.unpack("!HH", msg[end:end + 4])
                question = msg[12:end + 4]
                known = name in zone
                answers = b""
                count = extra = 0
                record = (struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + socket.inet_aton(zone[name])) if known else b""
                if known and qtype in (1, 255):  # A, and ANY (which gets the A record)
                    answers, count = record, 1
                elif known and qtype == 15:  # MX: the name itself, its address as additional data
                    answers = struct.pack("!HHHIHH", 0xC00C, 15, 1, 30, 4, 10) + b"\xc0\x0c" + record
                    count, extra = 1, 1
                rcode = 0 if known else 3
                head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, count, 0, extra)
                s.sendto(head + question + answers, peer)
            except (IndexError, struct.error, UnicodeDecodeError):
                pass

    threading.Thread(target=loop, daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", type=int, action="append", default=[])
    ap.add_argument("--https", type=int, action="append", default=[])
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--dns")
    ap.add_argument("--zone", help="JSON file: name -> IPv4 address")
    a = ap.parse_args()
    for p in a.http:
        serve_http(p)
    for p in a.https:
        serve_http(p, (a.cert, a.key))
    if a.dns:
        with open(a.zone) as f:
            serve_dns(a.dns, json.load(f))
    threading.Event().wait()


if __name__ == "__main__":
    main()
