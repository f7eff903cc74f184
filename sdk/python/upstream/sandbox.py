"""Sandboxes ("boxes"): create one, run commands in it, read and write its files."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from .client import Client, default_client, iter_ndjson
from .errors import UpstreamError
from .units import Duration, Size, duration_ms, renamed, size

Command = Union[str, Sequence[str]]


@dataclass
class ExecResult:
    """What a finished command did."""

    exec: int
    exit_code: Optional[int]
    stdout: str
    stderr: str
    duration_ms: int
    cpu_seconds: float
    state: str
    reason: str
    signal: int = 0
    timed_out: bool = False
    oom_killed: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def duration(self) -> float:
        """Seconds the command ran (duration_ms / 1000)."""
        return self.duration_ms / 1000

    def __repr__(self) -> str:
        def short(text: str) -> str:
            return repr(text if len(text) <= 40 else text[:37] + "...")
        extra = "".join(f", {k}=True" for k in ("timed_out", "oom_killed") if getattr(self, k))
        return (f"ExecResult(exec={self.exec}, exit_code={self.exit_code}, state={self.state!r}, "
                f"duration={self.duration:g}s{extra}, stdout={short(self.stdout)}, stderr={short(self.stderr)})")

    @classmethod
    def from_json(cls, j: Dict[str, Any], stdout: str = "", stderr: str = "") -> "ExecResult":
        return cls(
            exec=j.get("exec", 0),
            exit_code=j.get("exit_code"),
            stdout=j.get("stdout", stdout),
            stderr=j.get("stderr", stderr),
            duration_ms=j.get("duration_ms", 0),
            cpu_seconds=j.get("cpu_seconds", 0.0),
            state=j.get("state", ""),
            reason=j.get("reason", ""),
            signal=j.get("signal", 0),
            timed_out=j.get("timed_out", False),
            oom_killed=j.get("oom_killed", False),
            stdout_truncated=j.get("stdout_truncated", False),
            stderr_truncated=j.get("stderr_truncated", False),
            raw=j,
        )


@dataclass
class ExecEvent:
    """One event of a streamed command: `start`, `stdout`, `stderr` or `exit`."""

    type: str
    data: str = ""  # the output as text (bytes that are not UTF-8 show as U+FFFD)
    exec: int = 0
    result: Optional[ExecResult] = None
    raw: bytes = b""  # the output bytes exactly


@dataclass
class FileInfo:
    name: str
    path: str
    type: str
    mode: int
    size: int
    mtime: str
    uid: int
    gid: int
    target: Optional[str] = None

    @classmethod
    def from_json(cls, j: Dict[str, Any]) -> "FileInfo":
        return cls(j["name"], j["path"], j["type"], int(j["mode"], 8), j["size"], j["mtime"], j["uid"], j["gid"], j.get("target"))


def _command(cmd: Command) -> Dict[str, Any]:
    if isinstance(cmd, str):
        return {"shell": cmd}
    argv = list(cmd)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("a command is a shell string or a non-empty list of strings")
    return {"cmd": argv}


class ExecStream:
    """A running streamed command: iterate it for events; feed its stdin if asked for."""

    def __init__(self, box: "Sandbox", conn, resp):
        self._box = box
        self._conn = conn
        self._events = iter_ndjson(resp)
        first = next(self._events, None)
        if not first or first.get("type") != "start":
            conn.close()
            raise UpstreamError("the stream ended before the command started", "internal")
        self.exec = first["exec"]
        self.result: Optional[ExecResult] = None
        self._out: List[str] = []
        self._err: List[str] = []

    def __repr__(self) -> str:
        done = f", exit_code={self.result.exit_code}" if self.result else ""
        return f"ExecStream(exec={self.exec}, box={self._box.name!r}{done})"

    def __iter__(self) -> Iterator[ExecEvent]:
        yield ExecEvent("start", exec=self.exec)
        try:
            for j in self._events:
                t = j.get("type")
                if t in ("stdout", "stderr"):
                    raw = base64.b64decode(j["data_b64"]) if "data_b64" in j else j["data"].encode()
                    text = j["data"] if "data" in j else raw.decode("utf-8", "replace")
                    (self._out if t == "stdout" else self._err).append(text)
                    yield ExecEvent(t, data=text, exec=self.exec, raw=raw)
                elif t == "exit":
                    self.result = ExecResult.from_json(j, "".join(self._out), "".join(self._err))
                    yield ExecEvent("exit", exec=self.exec, result=self.result)
        finally:
            self._conn.close()
        if self.result is None:
            raise UpstreamError("the stream was cut before the command ended", "internal")

    def wait(self) -> ExecResult:
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def send_stdin(self, data: Union[str, bytes], eof: bool = False) -> None:
        raw = data.encode() if isinstance(data, str) else data
        c = self._box._client
        c.request("POST", c.path("/v1/boxes/{}/execs/{}/stdin", self._box.id, self.exec, eof=eof or None), raw=raw)

    def close_stdin(self) -> None:
        self.send_stdin(b"", eof=True)

    def kill(self, signal: Union[str, int] = "KILL") -> None:
        self._box.kill(self.exec, signal)


class ExecHandle:
    """A command started in the background."""

    def __init__(self, box: "Sandbox", exec_no: int):
        self._box = box
        self.exec = exec_no

    def __repr__(self) -> str:
        return f"ExecHandle(exec={self.exec}, box={self._box.name!r})"

    def status(self) -> Dict[str, Any]:
        c = self._box._client
        return c.json("GET", c.path("/v1/boxes/{}/execs/{}", self._box.id, self.exec))

    def running(self) -> bool:
        return self.status()["state"] == "running"

    def logs(self, stream: str = "stdout") -> bytes:
        c = self._box._client
        return c.request("GET", c.path("/v1/boxes/{}/execs/{}/logs", self._box.id, self.exec, stream=stream))[1]

    def kill(self, signal: Union[str, int] = "KILL") -> None:
        self._box.kill(self.exec, signal)

    def wait(self, timeout: Duration = 300.0, interval: Duration = 0.05) -> Dict[str, Any]:
        """Polls until the command ends (timeout and interval: seconds, or strings such as '30s');
        TimeoutError past the timeout. Returns its status."""
        limit, step = duration_ms(timeout, "timeout") / 1000, duration_ms(interval, "interval") / 1000
        deadline = time.monotonic() + limit
        while True:
            s = self.status()
            if s["state"] != "running":
                return s
            if time.monotonic() > deadline:
                raise TimeoutError(f"exec {self.exec} still runs after {limit:g}s")
            time.sleep(step)


class Files:
    """The files of a box. Relative paths start at the box's working directory."""

    def __init__(self, box: "Sandbox"):
        self._box = box

    def __repr__(self) -> str:
        return f"Files(box={self._box.name!r})"

    def _p(self, template: str, **q: Any) -> str:
        return self._box._client.path(template, self._box.id, **q)

    def write(self, path: str, data: Union[str, bytes], mode: Optional[int] = None, mkdirs: bool = False) -> FileInfo:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        q = self._p("/v1/boxes/{}/files", path=path, mode=f"{mode:04o}" if mode is not None else None, mkdirs=mkdirs or None)
        _, body = self._box._client.request("PUT", q, raw=raw)
        return FileInfo.from_json(json.loads(body))

    def read(self, path: str) -> bytes:
        return self._box._client.request("GET", self._p("/v1/boxes/{}/files", path=path))[1]

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def list(self, path: str = ".") -> List[FileInfo]:
        j = self._box._client.json("GET", self._p("/v1/boxes/{}/files/list", path=path))
        return [FileInfo.from_json(e) for e in j["entries"]]

    def stat(self, path: str, follow: bool = False) -> FileInfo:
        return FileInfo.from_json(self._box._client.json("GET", self._p("/v1/boxes/{}/files/stat", path=path, follow=follow or None)))

    def exists(self, path: str) -> bool:
        from .errors import NotFoundError
        try:
            self.stat(path)
            return True
        except NotFoundError:
            return False

    def mkdir(self, path: str, parents: bool = True, mode: int = 0o755) -> FileInfo:
        body = {"path": path, "parents": parents, "mode": f"{mode:04o}"}
        return FileInfo.from_json(self._box._client.json("POST", self._p("/v1/boxes/{}/files/mkdir"), body))

    def remove(self, path: str, recursive: bool = False) -> None:
        self._box._client.request("DELETE", self._p("/v1/boxes/{}/files", path=path, recursive=recursive or None))

    def move(self, src: str, dst: str, overwrite: bool = True) -> FileInfo:
        body = {"from": src, "to": dst, "overwrite": overwrite}
        return FileInfo.from_json(self._box._client.json("POST", self._p("/v1/boxes/{}/files/move"), body))

    def upload(self, local_path: str, remote_path: str) -> None:
        """Copies a local file or directory tree into the box at `remote_path`."""
        if os.path.isdir(local_path):
            with tempfile.TemporaryFile() as f:
                with tarfile.open(fileobj=f, mode="w") as tar:
                    for entry in sorted(os.listdir(local_path)):
                        tar.add(os.path.join(local_path, entry), arcname=entry)
                f.seek(0)
                self.mkdir(remote_path)
                conn, resp = self._box._client.stream(
                    "PUT", self._p("/v1/boxes/{}/files/archive", path=remote_path), accept="application/json",
                    raw_upload=f, content_type="application/x-tar")
                resp.read()
                conn.close()
        else:
            with open(local_path, "rb") as f:
                mode = os.stat(local_path).st_mode & 0o777
                conn, resp = self._box._client.stream(
                    "PUT", self._p("/v1/boxes/{}/files", path=remote_path, mode=f"{mode:04o}"), accept="application/json",
                    raw_upload=f)
                resp.read()
                conn.close()

    def download(self, remote_path: str, local_path: str) -> None:
        """Copies a file or directory tree of the box to `local_path`."""
        info = self.stat(remote_path, follow=True)
        if info.type == "dir":
            conn, resp = self._box._client.stream("GET", self._p("/v1/boxes/{}/files/archive", path=remote_path), accept="application/x-tar")
            try:
                data = io.BytesIO(resp.read())
            finally:
                conn.close()
            os.makedirs(local_path, exist_ok=True)
            with tarfile.open(fileobj=data, mode="r") as tar:
                tar.extractall(local_path, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(local_path)
            # The archive holds the directory itself as its top entry: move its content up.
            top = os.path.join(local_path, os.path.basename(remote_path.rstrip("/")) or ".")
            if os.path.isdir(top) and top != local_path and not os.path.samefile(top, local_path):
                for entry in os.listdir(top):
                    shutil.move(os.path.join(top, entry), os.path.join(local_path, entry))
                os.rmdir(top)
        else:
            conn, resp = self._box._client.stream("GET", self._p("/v1/boxes/{}/files", path=remote_path), accept="application/octet-stream")
            try:
                tmp = local_path + ".part"
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(resp, f)
                os.replace(tmp, local_path)
            finally:
                conn.close()


def _egress(allow_domains, allow_cidrs, deny_cidrs, headers) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in (("allow_domains", allow_domains), ("allow_cidrs", allow_cidrs), ("deny_cidrs", deny_cidrs)):
        if v:
            out[k] = list(v)
    if headers:
        out["headers"] = {k: dict(v) for k, v in headers.items()}
    return out


class Sandbox:
    """A box on an upstream server.

    >>> with Sandbox.create() as sb:
    ...     print(sb.exec("python3 -c 'print(6*7)'").stdout)
    42
    """

    def __init__(self, info: Dict[str, Any], client: Optional[Client] = None):
        self._client = client or default_client()
        self.info = info
        self.files = Files(self)

    @property
    def id(self) -> str:
        return self.info["id"]

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def state(self) -> str:
        return self.info["state"]

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, name={self.name!r}, state={self.state!r})"

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def create(cls, *, name: Optional[str] = None, image: Optional[str] = None, labels: Optional[Mapping[str, str]] = None,
               env: Optional[Mapping[str, str]] = None, cpus: Optional[float] = None, memory: Optional[Size] = None,
               pids: Optional[int] = None, disk: Optional[Size] = None, user: Optional[str] = None,
               workdir: Optional[str] = None, auto_pause: Optional[Duration] = None,
               auto_stop: Optional[Duration] = None, keep_alive: Optional[bool] = None,
               network: Optional[str] = None, allow_domains: Optional[List[str]] = None,
               allow_cidrs: Optional[List[str]] = None, deny_cidrs: Optional[List[str]] = None,
               headers: Optional[Mapping[str, Mapping[str, str]]] = None,
               client: Optional[Client] = None, auto_pause_ms: Optional[int] = None,
               auto_stop_ms: Optional[int] = None) -> "Sandbox":
        """Creates a box and starts it. memory and disk: bytes, or strings such as "1g". auto_pause
        / auto_stop (seconds or strings such as "10m"; 0: never) and keep_alive are its idle policy,
        applied by the server (auto_pause_ms / auto_stop_ms: deprecated, in milliseconds). network: "none" (default), "allow-all" or "custom"
        (only allow_domains, e.g. "pypi.org" or "*.example.com", and allow_cidrs; deny_cidrs always
        win). headers: {host pattern: {header: value}} added by the host proxy to the box's HTTPS
        requests to those hosts; the values never enter the box."""
        c = client or default_client()
        body: Dict[str, Any] = {}
        for k, v in (("name", name), ("image", image), ("user", user), ("workdir", workdir), ("network", network)):
            if v is not None:
                body[k] = v
        if labels:
            body["labels"] = dict(labels)
        if env:
            body["env"] = dict(env)
        limits: Dict[str, Any] = {k: v for k, v in (("cpus", cpus), ("pids", pids)) if v is not None}
        for k, v in (("memory", memory), ("disk", disk)):
            if v is not None:
                limits[k] = size(v, k)
        if limits:
            body["limits"] = limits
        auto_pause = renamed("auto_pause", auto_pause, "auto_pause_ms", auto_pause_ms)
        auto_stop = renamed("auto_stop", auto_stop, "auto_stop_ms", auto_stop_ms)
        policy: Dict[str, Any] = {k: duration_ms(v, k[:-3]) for k, v in (("auto_pause_ms", auto_pause),
                                                                        ("auto_stop_ms", auto_stop)) if v is not None}
        if keep_alive is not None:
            policy["keep_alive"] = keep_alive
        if policy:
            body["policy"] = policy
        egress = _egress(allow_domains, allow_cidrs, deny_cidrs, headers)
        if egress:
            body["egress"] = egress
        return cls(c.json("POST", "/v1/boxes", body), c)

    @classmethod
    def create_many(cls, count: int, *, name: Optional[str] = None, image: Optional[str] = None,
                    labels: Optional[Mapping[str, str]] = None, env: Optional[Mapping[str, str]] = None,
                    client: Optional[Client] = None) -> List["Sandbox"]:
        """`count` boxes at once (named NAME-1..NAME-N with a name). From a snapshot, they share
        its layers: nothing is copied per box."""
        c = client or default_client()
        body: Dict[str, Any] = {"count": count}
        for k, v in (("name", name), ("image", image)):
            if v is not None:
                body[k] = v
        if labels:
            body["labels"] = dict(labels)
        if env:
            body["env"] = dict(env)
        return [cls(b, c) for b in c.json("POST", "/v1/boxes", body)["boxes"]]

    @classmethod
    def get(cls, box: str, client: Optional[Client] = None) -> "Sandbox":
        c = client or default_client()
        return cls(c.json("GET", c.path("/v1/boxes/{}", box)), c)

    @classmethod
    def list(cls, *, labels: Optional[Mapping[str, str]] = None, state: Optional[str] = None,
             page_size: int = 100, client: Optional[Client] = None) -> List["Sandbox"]:
        c = client or default_client()
        out: List[Sandbox] = []
        after = None
        label_q = [f"{k}={v}" for k, v in (labels or {}).items()] or None
        while True:
            j = c.json("GET", c.path("/v1/boxes", label=label_q, state=state, limit=page_size, after=after))
            out.extend(cls(b, c) for b in j["boxes"])
            after = j["next"]
            if not after:
                return out

    def refresh(self) -> "Sandbox":
        self.info = self._client.json("GET", self._client.path("/v1/boxes/{}", self.id))
        return self

    def stop(self, grace: Optional[Duration] = None, *, grace_ms: Optional[int] = None) -> None:
        """Stops the box: SIGTERM to its processes, SIGKILL after `grace` (seconds or a string such
        as '5s'; the server's default when not given; grace_ms: deprecated, in milliseconds)."""
        grace = renamed("grace", grace, "grace_ms", grace_ms)
        body = {"grace_ms": duration_ms(grace, "grace")} if grace is not None else {}
        self.info = self._client.json("POST", self._client.path("/v1/boxes/{}/stop", self.id), body)

    def start(self) -> None:
        self.info = self._client.json("POST", self._client.path("/v1/boxes/{}/start", self.id), {})

    def pause(self) -> None:
        """Freezes every process of the box (memory kept, no CPU used). An exec or file call
        resumes it."""
        self.info = self._client.json("POST", self._client.path("/v1/boxes/{}/pause", self.id), {})

    def set_network(self, mode: str, *, allow_domains: Optional[List[str]] = None,
                    allow_cidrs: Optional[List[str]] = None, deny_cidrs: Optional[List[str]] = None,
                    headers: Optional[Mapping[str, Mapping[str, str]]] = None) -> None:
        """Changes the network mode ("none", "allow-all" or "custom") and the egress policy; a
        running box gets the change at once. The headers stay as they were unless given ({}
        removes them)."""
        body: Dict[str, Any] = {"mode": mode, **_egress(allow_domains, allow_cidrs, deny_cidrs, None)}
        if headers is not None:
            body["headers"] = {k: dict(v) for k, v in headers.items()}
        self.info = self._client.json("POST", self._client.path("/v1/boxes/{}/network", self.id), body)

    def traffic(self) -> Dict[str, Any]:
        """The box's network counters: bytes, connections and requests per destination, denied
        attempts with their reasons, DNS queries."""
        return self._client.json("GET", self._client.path("/v1/boxes/{}/traffic", self.id))

    def expose(self, port: int, auth: str = "bearer") -> Dict[str, Any]:
        """Makes `port` of the box reachable at a URL on the server's host, for requests with the
        generated credentials (returned once: "token" for bearer, "username"/"password" for
        basic). HTTP and WebSocket."""
        return self._client.json("POST", self._client.path("/v1/boxes/{}/expose", self.id),
                                 {"port": port, "auth": auth})

    def exposures(self) -> List[Dict[str, Any]]:
        return self._client.json("GET", self._client.path("/v1/boxes/{}/expose", self.id))["exposures"]

    def unexpose(self, exposure: str) -> None:
        """Revokes an exposure (by id, or the port in the box)."""
        self._client.json("DELETE", self._client.path("/v1/boxes/{}/expose/{}", self.id, str(exposure)))

    def archive(self) -> None:
        """Packs a stopped box's files into the server's layer store and frees its working
        directory; start() (or a file call) unpacks them."""
        self.info = self._client.json("POST", self._client.path("/v1/boxes/{}/archive", self.id), {})

    def resume(self) -> None:
        self.info = self._client.json("POST", self._client.path("/v1/boxes/{}/resume", self.id), {})

    def snapshot(self, name: Optional[str] = None, labels: Optional[Mapping[str, str]] = None) -> "Snapshot":
        """Saves the box's files and settings (a running box is frozen only for the moment of
        capture). Boxes can then be made from it with `image=snapshot.name`."""
        from .snapshots import Snapshot
        body: Dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if labels:
            body["labels"] = dict(labels)
        return Snapshot(self._client.json("POST", self._client.path("/v1/boxes/{}/snapshot", self.id), body), self._client)

    def fork(self, count: int = 1, *, name: Optional[str] = None, labels: Optional[Mapping[str, str]] = None) -> List["Sandbox"]:
        """Snapshots this box and starts `count` boxes from it."""
        body: Dict[str, Any] = {"count": count}
        if name is not None:
            body["name"] = name
        if labels:
            body["labels"] = dict(labels)
        j = self._client.json("POST", self._client.path("/v1/boxes/{}/fork", self.id), body)
        return [Sandbox(b, self._client) for b in j["boxes"]]

    def delete(self, force: bool = True) -> None:
        self._client.request("DELETE", self._client.path("/v1/boxes/{}", self.id, force=force))

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.delete(force=True)
        except UpstreamError:
            if exc[0] is None:
                raise

    # --- commands -------------------------------------------------------------------------------

    def _exec_body(self, cmd: Command, env, cwd, user, timeout) -> Dict[str, Any]:
        body = _command(cmd)
        if env:
            body["env"] = dict(env)
        if cwd is not None:
            body["cwd"] = cwd
        if user is not None:
            body["user"] = user
        if timeout is not None:
            body["timeout_ms"] = duration_ms(timeout, "timeout")
        return body

    def exec(self, cmd: Command, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             user: Optional[str] = None, timeout: Optional[Duration] = None, stdin: Union[str, bytes, None] = None) -> ExecResult:
        """Runs a command (a shell string, or a list of argv) and returns its result. timeout:
        seconds, or a string such as '30s' (killed past it, with timed_out set)."""
        body = self._exec_body(cmd, env, cwd, user, timeout)
        if stdin is not None:
            body["stdin"] = stdin.decode() if isinstance(stdin, bytes) else stdin
        return ExecResult.from_json(self._client.json("POST", self._client.path("/v1/boxes/{}/execs", self.id), body))

    def exec_stream(self, cmd: Command, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                    user: Optional[str] = None, timeout: Optional[Duration] = None, stdin: bool = False) -> ExecStream:
        """Starts a command and streams its output: iterate the result for ExecEvents."""
        body = self._exec_body(cmd, env, cwd, user, timeout)
        body["stream"] = True
        if stdin:
            body["stdin_stream"] = True
        conn, resp = self._client.stream("POST", self._client.path("/v1/boxes/{}/execs", self.id), body, timeout=None)
        return ExecStream(self, conn, resp)

    def exec_background(self, cmd: Command, *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                        user: Optional[str] = None, timeout: Optional[Duration] = None) -> ExecHandle:
        body = self._exec_body(cmd, env, cwd, user, timeout)
        body["background"] = True
        j = self._client.json("POST", self._client.path("/v1/boxes/{}/execs", self.id), body)
        return ExecHandle(self, j["exec"])

    def execs(self, running: bool = False, limit: int = 50) -> List[Dict[str, Any]]:
        return self._client.json("GET", self._client.path("/v1/boxes/{}/execs", self.id, running=running or None, limit=limit))["execs"]

    def kill(self, exec_no: int, signal: Union[str, int] = "KILL") -> None:
        self._client.json("POST", self._client.path("/v1/boxes/{}/execs/{}/kill", self.id, exec_no), {"signal": signal})
