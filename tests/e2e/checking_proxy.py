"""A relay between a client and `upstream serve` that checks every request the client sends
against the OpenAPI document (docs/openapi.json): the route and method are documented, a body
goes only where the operation takes one, with a documented content type, and a JSON body matches
the operation's schema (unknown fields included, since the schemas forbid them).

Bytes are relayed as they come, both ways; requests and responses are parsed only as far as
HTTP/1.1 framing needs (Content-Length, chunked, or to the end of the connection), so streaming,
keep-alive and a client going away behave as they do without the relay. A request the document
does not describe counts only if the server accepted it (a 2xx or 3xx reply): refusing a bad
request is the server's job, and tests send bad ones on purpose. Violations are collected, not
raised: the test that caused one fails at its end.
"""

import json
import socket
import threading

import jsonschema

from openapi_check import SPEC, operation

_MAX_HEAD = 64 << 10

# The relays in use, whose violations the conftest's check collects after every test.
ACTIVE = set()


def _schema(ref_or_schema):
    schema = dict(ref_or_schema)
    schema["components"] = SPEC["components"]
    return schema


def check_request(method, target, content_type, body):
    """The violations (strings) of one request; empty when the document describes it."""
    path = target.split("?", 1)[0]
    if path in ("/healthz", "/metrics", "/v1/openapi.json"):
        return []
    template, op = operation(method, path)
    if op is None:
        return [f"{method} {path}: not in the OpenAPI document"]
    rb = op.get("requestBody")
    if not body:
        if rb and rb.get("required"):
            return [f"{method} {template}: the document requires a body; none was sent"]
        return []
    if not rb:
        return [f"{method} {template}: a body was sent ({len(body)} bytes) to an operation that takes none"]
    ctype = (content_type or "").split(";")[0].strip()
    content = rb.get("content", {})
    if ctype not in content:
        return [f"{method} {template}: body of type {ctype!r}; documented: {sorted(content)}"]
    if ctype != "application/json":
        return []
    try:
        value = json.loads(body)
    except ValueError as e:
        return [f"{method} {template}: the body is not JSON ({e})"]
    errors = sorted(jsonschema.Draft202012Validator(_schema(content[ctype]["schema"])).iter_errors(value),
                    key=lambda e: list(e.path))
    return [f"{method} {template}: body {body[:200]!r}: {e.message} at {'/'.join(map(str, e.path)) or 'top'}"
            for e in errors]


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def until(self, sep, limit):
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("request head too large")
            self.fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def chunked(self, send, sink):
        """Passes a chunked body on: its framing to `send`, its data to `sink`."""
        while True:
            size_line = self.until(b"\r\n", 1024)
            send(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                send(self.until(b"\r\n", _MAX_HEAD))  # the end of the trailers
                return
            self.exactly(size, sink)
            send(self.until(b"\r\n", 16))

    def exactly(self, n, sink):
        while n > 0:
            if not self.buf:
                self.fill()
            part, self.buf = self.buf[:n], self.buf[n:]
            sink(part)
            n -= len(part)


class CheckingProxy:
    """Listens on 127.0.0.1; `url` is what clients use instead of the server's."""

    def __init__(self, server_url, keep_bodies_up_to=1 << 20):
        host, port = server_url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
        self.target = (host, int(port))
        self.keep = keep_bodies_up_to
        self.violations = []
        self.requests = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        ACTIVE.add(self)
        threading.Thread(target=self._accept, daemon=True).start()

    def take_violations(self):
        with self._lock:
            out, self.violations = self.violations, []
        return out

    def close(self):
        self._closed = True
        ACTIVE.discard(self)
        self._listener.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = []  # per request in order: (method, its violations), until its response
        cv = threading.Condition()
        threading.Thread(target=self._responses, args=(upstream, client, pending, cv),
                         daemon=True).start()
        r = _Reader(client)
        try:
            while True:
                head = r.until(b"\r\n\r\n", _MAX_HEAD)
                upstream.sendall(head)
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = bytearray()

                def sink(part):
                    upstream.sendall(part)
                    if len(body) < self.keep:
                        body.extend(part[: self.keep - len(body)])

                if headers.get("transfer-encoding", "").lower() == "chunked":
                    r.chunked(upstream.sendall, sink)
                else:
                    r.exactly(int(headers.get("content-length", "0") or 0), sink)
                found = check_request(method, target, headers.get("content-type"), bytes(body))
                with cv:
                    pending.append((method, found))
                    cv.notify_all()
        except (EOFError, OSError, ValueError):
            pass
        finally:
            # The client is done sending: so is the relay. The response side closes both.
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _responses(self, upstream, client, pending, cv):
        r = _Reader(upstream)

        def relay(part):
            client.sendall(part)

        try:
            while True:
                head = r.until(b"\r\n\r\n", _MAX_HEAD)
                client.sendall(head)
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ")[1])
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                if 100 <= status < 200 and status != 101:
                    continue  # an interim response: the final one follows
                with cv:
                    # The request is parsed once its body has passed; the reply may come first.
                    cv.wait_for(lambda: pending, timeout=600)
                    method, found = pending.pop(0) if pending else ("", [])
                with self._lock:
                    self.requests += 1
                    if 200 <= status < 400:
                        self.violations.extend(found)
                if status == 101:
                    break
                if method == "HEAD" or status in (204, 304):
                    continue
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    r.chunked(client.sendall, relay)
                elif "content-length" in headers:
                    r.exactly(int(headers["content-length"]), relay)
                else:
                    break  # to the end of the connection
            # Whatever is left (an upgraded connection, or a body to the end) goes through as is.
            if r.buf:
                client.sendall(r.buf)
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except (EOFError, OSError, ValueError):
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
