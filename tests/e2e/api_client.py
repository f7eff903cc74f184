"""A raw HTTP client for the API tests: every response is checked against the OpenAPI document."""

import http.client
import json

import openapi_check


class Api:
    def __init__(self, url, key=None, check=True):
        host, port = url.split("//", 1)[1].split(":")
        self.host, self.port = host, int(port)
        self.key = key
        self.check = check
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def raw(self, method, path, body=None, headers=None, key=...):
        h = {"Accept": "application/json"}
        key = self.key if key is ... else key
        if key:
            h["Authorization"] = f"Bearer {key}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt:
                    raise
        if r.will_close:
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        ctype = r.getheader("Content-Type", "")
        if self.check:
            openapi_check.check(method, path, r.status, ctype, data)
        return r.status, ctype, data

    def __call__(self, method, path, body=None, **kw):
        """Returns (status, parsed JSON body)."""
        status, ctype, data = self.raw(method, path, body, **kw)
        assert ctype.startswith("application/json"), f"{method} {path}: {status} {ctype} {data[:200]!r}"
        return status, json.loads(data)

    def stream(self, path, body, accept="application/x-ndjson"):
        """POSTs and returns the raw streamed body lines (a fresh connection; read to the end)."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=120)
        h = {"Accept": accept, "Content-Type": "application/json"}
        if self.key:
            h["Authorization"] = f"Bearer {self.key}"
        c.request("POST", path, body=json.dumps(body).encode(), headers=h)
        r = c.getresponse()
        return c, r
