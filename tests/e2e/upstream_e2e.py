"""Shared helpers of the end-to-end tests (imported by conftest.py and the test modules)."""

import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ID_RE = re.compile(r"^[0-9a-f]{12}$")

# The environment of every CLI call is built here, never inherited from whoever runs pytest.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "UPSTREAM_POOL_SIZE": "8g",
    "UPSTREAM_DEFAULT_DISK": "2g",
}


class Upstream:
    """Runs the CLI. Calling it returns (returncode, stdout, stderr)."""

    def __init__(self, binary, home):
        self.binary = str(binary)
        self.home = str(home)
        self.env = dict(BASE_ENV, UPSTREAM_HOME=self.home)
        self.remote = False  # True: the CLI talks to a server (UPSTREAM_URL)

    def __call__(self, *args, input=None, check=None, timeout=60, text=True, cwd=None):
        """Runs `upstream ARGS...`.

        input: str/bytes fed to stdin (stdin is /dev/null otherwise).
        check: None (no check), True (must exit 0) or an int (must exit with exactly that).
        text: False returns stdout/stderr as bytes.
        """
        if text and isinstance(input, str):
            data = input.encode()
        else:
            data = input
        argv = [self.binary, *[str(a) for a in args]]
        try:
            r = subprocess.run(
                argv,
                input=data,
                stdin=subprocess.DEVNULL if data is None else None,
                capture_output=True,
                env=self.env,
                timeout=timeout,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"timed out after {timeout}s: {argv!r}\nstdout: {e.stdout!r}\nstderr: {e.stderr!r}")
        out, err = r.stdout, r.stderr
        if text:
            out = out.decode("utf-8", "replace")
            err = err.decode("utf-8", "replace")
        if check is not None:
            want = 0 if check is True else check
            assert r.returncode == want, (
                f"{argv[1:]!r} exited {r.returncode}, expected {want}\nstdout: {out!r}\nstderr: {err!r}"
            )
        return r.returncode, out, err

    # Small conveniences built on __call__ ------------------------------------------------------

    def ok(self, *args, **kw):
        """Runs a command that must succeed; returns its stdout."""
        return self(*args, check=True, **kw)[1]

    def json(self, *args, **kw):
        return json.loads(self.ok("--json", *args, **kw))

    def ls_json(self):
        return self.json("box", "ls")

    def inspect(self, box):
        return self.json("box", "inspect", box)

    def create(self, *args, name=None):
        """Creates a box (unique name unless given) and returns (id, name)."""
        name = name or unique_name()
        out = self.ok("box", "create", "--name", name, *args).strip()
        assert ID_RE.match(out), f"box create printed {out!r}, not a 12-hex id"
        return out, name

    def rm(self, box):
        self("box", "rm", "-f", box, timeout=60)


def unique_name(prefix="e2e"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls predicate() until it returns a truthy value; bounded in time and in tries."""
    deadline = time.monotonic() + timeout
    tries = int(timeout / interval) + 1
    for _ in range(tries):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def on_a_terminal(argv, env, timeout=20):
    """Runs argv with stdin, stdout and stderr on a pseudo-terminal, reading what it writes for
    at most `timeout` seconds; returns (exit code, output as text)."""
    import os
    import pty
    import select
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        slave = -1
        out, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout=20), out.decode(errors="replace")
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


class Server:
    """`upstream serve` on an ephemeral loopback port, over the given CLI's state directory."""

    def __init__(self, up, *args, env=None):
        import os
        import select
        self.up = up
        self.log_path = Path(up.home) / f"serve-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [up.binary, "serve", "--listen", "127.0.0.1:0", *[str(a) for a in args]],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.PIPE, env=dict(up.env, **(env or {})))
        # The first line on stderr says where it listens; the rest (the access log) goes to a file.
        line = b""
        deadline = time.monotonic() + 30
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.5)
            if r:
                ch = os.read(self.proc.stderr.fileno(), 1)
                if not ch:
                    break
                line += ch
        self.banner = line.decode()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", self.banner)
        if not m:
            self.proc.kill()
            rest = self.proc.stderr.read().decode()
            raise AssertionError(f"upstream serve did not start: {self.banner!r} {rest!r}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        import threading
        self._pump = threading.Thread(target=self._copy_log, daemon=True)
        self._pump.start()

    def _copy_log(self):
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):
            self._log.write(chunk)
            self._log.flush()

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=None, timeout=30):
        import signal as _signal
        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._pump.join(5)
        self._log.close()
        return self.proc.returncode
