"""The HTTP transport: one keep-alive connection per client, JSON in and out, typed errors."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import urllib.parse
from typing import Any, Dict, Iterator, Optional, Tuple

from .errors import ServerError, UpstreamError, error_for
from .units import Duration, duration_ms

DEFAULT_URL = "http://127.0.0.1:8420"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class Client:
    """Talks to one upstream server.

    `url` defaults to $UPSTREAM_URL (else http://127.0.0.1:8420); `unix:///path/to.sock` reaches a
    server's unix socket. `api_key` defaults to $UPSTREAM_API_KEY.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, timeout: Optional[Duration] = 300.0):
        self.url = (url or os.environ.get("UPSTREAM_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("UPSTREAM_API_KEY")
        # Seconds per non-streamed request (or a string such as '5m'); None: no limit.
        self.timeout = None if timeout is None else duration_ms(timeout, "timeout") / 1000
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme == "unix":
            self._unix: Optional[str] = parsed.path
            self._host, self._port = "", 0
        elif parsed.scheme == "http":
            self._unix = None
            self._host = parsed.hostname or "127.0.0.1"
            self._port = parsed.port or 80
        else:
            raise ValueError(f"unsupported URL {self.url!r}: use http://HOST:PORT or unix:///PATH")
        self._conn: Optional[http.client.HTTPConnection] = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, api_key={'set' if self.api_key else None!r})"

    # --- plumbing -------------------------------------------------------------------------------

    def _new_conn(self, timeout: Optional[float] = None) -> http.client.HTTPConnection:
        t = self.timeout if timeout is None else timeout
        if self._unix is not None:
            return _UnixConnection(self._unix, t)
        return http.client.HTTPConnection(self._host, self._port, timeout=t)

    def _headers(self, content_type: Optional[str], accept: str = "application/json") -> Dict[str, str]:
        h = {"Accept": accept, "User-Agent": "upstream-python/0.1.0"}
        if content_type:
            h["Content-Type"] = content_type
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    @staticmethod
    def path(template: str, *parts: Any, **query: Any) -> str:
        p = template.format(*(urllib.parse.quote(str(x), safe="") for x in parts))
        q = []
        for k, v in query.items():
            if v is None:
                continue
            for item in v if isinstance(v, (list, tuple)) else [v]:
                q.append((k, "true" if item is True else "false" if item is False else str(item)))
        return p + ("?" + urllib.parse.urlencode(q) if q else "")

    @staticmethod
    def _raise_for(status: int, body: bytes) -> None:
        try:
            j = json.loads(body)
            code, message = j.get("code", "internal"), j.get("message", "")
        except ValueError:
            code, message = "internal", body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
        raise error_for(status, code, message)

    def request(self, method: str, path: str, body: Any = None, *, raw: Optional[bytes] = None,
                content_type: Optional[str] = None) -> Tuple[int, bytes]:
        """Sends one request on the shared connection; returns (status, body) or raises."""
        if raw is not None:
            data, ctype = raw, content_type or "application/octet-stream"
        elif body is not None:
            data, ctype = json.dumps(body).encode(), "application/json"
        else:
            data, ctype = None, None
        with self._lock:
            for attempt in (0, 1):
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = self._new_conn()
                try:
                    self._conn.request(method, path, body=data, headers=self._headers(ctype))
                    resp = self._conn.getresponse()
                    payload = resp.read()
                    if resp.will_close:
                        self._conn.close()
                        self._conn = None
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                    # The server closed an idle keep-alive connection: retry once on a fresh one.
                    self._conn.close()
                    self._conn = None
                    if attempt == 1 or not reused:
                        raise ServerError(f"connection to {self.url} failed: {e}", "unavailable") from None
                except OSError as e:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    raise ServerError(f"cannot reach upstream at {self.url}: {e}", "unavailable") from None
        if resp.status >= 400:
            self._raise_for(resp.status, payload)
        return resp.status, payload

    def json(self, method: str, path: str, body: Any = None) -> Any:
        _, payload = self.request(method, path, body)
        return json.loads(payload) if payload else None

    def stream(self, method: str, path: str, body: Any = None, *, accept: str = "application/x-ndjson",
               raw_upload: Optional[Any] = None, content_type: Optional[str] = None,
               timeout: Optional[float] = None) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """A request on its own connection whose response is read as it comes."""
        conn = self._new_conn(timeout)
        try:
            if raw_upload is not None:
                conn.request(method, path, body=raw_upload, headers=self._headers(content_type or "application/octet-stream", accept))
            else:
                data = json.dumps(body).encode() if body is not None else None
                conn.request(method, path, body=data, headers=self._headers("application/json" if data else None, accept))
            resp = conn.getresponse()
        except OSError as e:
            conn.close()
            raise ServerError(f"cannot reach upstream at {self.url}: {e}", "unavailable") from None
        if resp.status >= 400:
            payload = resp.read()
            conn.close()
            self._raise_for(resp.status, payload)
        return conn, resp

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def iter_ndjson(resp: http.client.HTTPResponse) -> Iterator[Dict[str, Any]]:
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.strip()
        if line:
            yield json.loads(line)


_default: Optional[Client] = None


def default_client() -> Client:
    global _default
    if _default is None:
        _default = Client()
    return _default


__all__ = ["Client", "UpstreamError", "default_client", "iter_ndjson"]
