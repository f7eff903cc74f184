"""End-to-end tests of the `upstream` CLI: real boxes, driven exactly as a user drives them.

Every CLI call goes through the `up` fixture, which runs the binary named by UPSTREAM_BIN (default:
build/upstream of this checkout) with an explicit environment that points UPSTREAM_HOME at a fresh
state directory made for this test session. Teardown removes every box, unmounts the storage
pool and deletes the directory.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from upstream_e2e import REPO, Upstream, unique_name


def _run_quiet(argv, env, timeout):
    try:
        return subprocess.run(argv, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, OSError):
        return None


def _binary():
    binary = Path(os.environ.get("UPSTREAM_BIN") or REPO / "build" / "upstream")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.exit(f"upstream binary not found at {binary} (set UPSTREAM_BIN)", returncode=2)
    return binary


@pytest.fixture(scope="session")
def up():
    home = tempfile.mkdtemp(prefix="upstream-e2e-", dir="/tmp")
    u = Upstream(_binary(), home)
    server = None
    try:
        if os.environ.get("UPSTREAM_E2E_REMOTE") == "1":
            # The same tests, with every CLI command going over HTTP to a server on this state
            # directory (the CLI with UPSTREAM_URL set).
            # The CLI reaches it through a relay that checks every request it sends against the
            # OpenAPI document.
            from checking_proxy import CheckingProxy
            from upstream_e2e import Server
            server = Server(u, "--no-access-log")
            proxy = CheckingProxy(server.url)
            u.env["UPSTREAM_URL"] = proxy.url
            u.remote = True
        yield u
    finally:
        if server is not None:
            u.env.pop("UPSTREAM_URL", None)
            proxy.close()
            server.stop()
        _teardown(u)


@pytest.fixture(autouse=True)
def _requests_are_documented():
    """Every request a client sent through a checking relay (checking_proxy.py) during the test
    is one the OpenAPI document describes."""
    import checking_proxy
    yield
    found = [v for p in list(checking_proxy.ACTIVE) for v in p.take_violations()]
    assert not found, "requests the OpenAPI document does not describe:\n" + "\n".join(found[:20])


@pytest.fixture(scope="module")
def lab():
    """The test internet of netlab.py, for the tests of one module; torn down after them."""
    from netlab import NetLab
    lab = NetLab()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def own_up():
    """A state directory of the test module's own (for tests that change installation-wide
    state, such as API keys)."""
    home = tempfile.mkdtemp(prefix="upstream-e2e-own-", dir="/tmp")
    u = Upstream(_binary(), home)
    try:
        yield u
    finally:
        _teardown(u)


def _teardown(u):
    # This state directory's cgroup root, to tidy up once its boxes are gone.
    r = _run_quiet([u.binary, "--json", "system", "info"], u.env, 60)
    try:
        instance = json.loads(r.stdout).get("instance", "") if r is not None and r.returncode == 0 else ""
    except ValueError:
        instance = ""
    r = _run_quiet([u.binary, "box", "ls", "-q"], u.env, 60)
    ids = r.stdout.decode().split() if r is not None and r.returncode == 0 else []
    for box_id in ids:
        _run_quiet([u.binary, "box", "rm", "-f", box_id], u.env, 60)
    _run_quiet([u.binary, "pool", "drain"], u.env, 60)  # boxes waiting in a warm pool
    _run_quiet(["umount", "-l", os.path.join(u.home, "pool")], u.env, 30)
    shutil.rmtree(u.home, ignore_errors=True)
    # Empty cgroups only: rmdir refuses a cgroup that still has processes.
    if re.fullmatch(r"[0-9a-f]{4,64}", instance or ""):
        for top in glob.glob(f"/sys/fs/cgroup/upstream-{instance}") + glob.glob(f"/sys/fs/cgroup/*/upstream-{instance}"):
            for dirpath, _, _ in os.walk(top, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


@pytest.fixture
def box(up):
    """A fresh running box, removed afterwards. Yields its name."""
    _, name = up.create()
    try:
        yield name
    finally:
        up.rm(name)


@pytest.fixture(scope="module")
def mbox(up):
    """A running box shared by the tests of one module (for tests that do not interfere)."""
    _, name = up.create(name=unique_name("mod"))
    try:
        yield name
    finally:
        up.rm(name)
