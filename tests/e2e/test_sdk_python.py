"""The Python SDK against a real server: installed with pip from sdk/python (offline, no build
isolation), then used as a user would."""

import importlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import pytest

from checking_proxy import CheckingProxy
from upstream_e2e import REPO, Server, unique_name, wait_until


@pytest.fixture(scope="module")
def sdk(tmp_path_factory):
    target = tmp_path_factory.mktemp("sdk")
    build = tempfile.mkdtemp(prefix="sdk-build-")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-index",
                        "--target", str(target), str(REPO / "sdk" / "python")],
                       capture_output=True, text=True, cwd=build, env=dict(os.environ, PIP_NO_CACHE_DIR="1",
                                                                           PIP_ROOT_USER_ACTION="ignore"))
    assert r.returncode == 0, r.stderr
    subprocess.run(["rm", "-rf", str(REPO / "sdk" / "python" / "build"), build])
    sys.path.insert(0, str(target))
    try:
        mod = importlib.import_module("upstream")
        assert mod.__file__.startswith(str(target)), mod.__file__
        yield mod
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("upstream", None)


@pytest.fixture(scope="module")
def server(up):
    s = Server(up)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def relay(server):
    """The server as the client reaches it: through a relay that checks every request the SDK
    sends against the OpenAPI document (checking_proxy.py)."""
    p = CheckingProxy(server.url)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def client(sdk, relay):
    c = sdk.Client(relay.url)
    yield c
    c.close()


def test_three_call_flow(sdk, client):
    with sdk.Sandbox.create(client=client, labels={"sdk": "py"}) as sb:
        result = sb.exec("python3 -c 'print(6 * 7)'")
        assert result.ok and result.stdout == "42\n" and result.exit_code == 0
        box_id = sb.id
    with pytest.raises(sdk.NotFoundError):
        sdk.Sandbox.get(box_id, client=client)


def test_environment_url_and_key(sdk, server, monkeypatch):
    monkeypatch.setenv("UPSTREAM_URL", server.url)
    c = sdk.Client()
    assert c.url == server.url
    assert c.json("GET", "/healthz")["status"] == "ok"


def test_exec_details(sdk, client):
    with sdk.Sandbox.create(client=client, env={"A": "1"}) as sb:
        r = sb.exec(["sh", "-c", "echo $A $B; echo oops >&2; exit 4"], env={"B": "2"})
        assert (r.exit_code, r.stdout, r.stderr, r.ok) == (4, "1 2\n", "oops\n", False)
        assert sb.exec("cat", stdin="fed\n").stdout == "fed\n"
        assert sb.exec("pwd", cwd="/tmp").stdout == "/tmp\n"
        assert sb.exec("id -u", user="user").stdout.strip() != "0"
        r = sb.exec("sleep 10", timeout=0.3)
        assert r.timed_out
        assert len(sb.execs(limit=10)) == 5


def test_exec_stream(sdk, client):
    with sdk.Sandbox.create(client=client) as sb:
        stream = sb.exec_stream("for i in 1 2 3; do echo line$i; sleep 0.05; done; echo warn >&2")
        events = list(stream)
        assert events[0].type == "start" and events[-1].type == "exit"
        assert "".join(e.data for e in events if e.type == "stdout") == "line1\nline2\nline3\n"
        assert [e.data for e in events if e.type == "stderr"] == ["warn\n"]
        assert stream.result.exit_code == 0 and stream.result.stdout == "line1\nline2\nline3\n"
        # stdin, fed while it runs.
        s = sb.exec_stream("read a; echo got $a; read b; echo got $b", stdin=True)
        s.send_stdin("one\n")
        s.send_stdin("two\n", eof=True)
        assert s.wait().stdout == "got one\ngot two\n"


def test_background(sdk, client):
    with sdk.Sandbox.create(client=client) as sb:
        h = sb.exec_background("echo started; sleep 300")
        assert h.running()
        wait_until(lambda: h.logs() == b"started\n", what="the background exec's output")
        h.kill("TERM")
        st = h.wait(timeout=10)
        assert st["state"] != "running"
        assert h.logs() == b"started\n"


def test_files(sdk, client, tmp_path):
    with sdk.Sandbox.create(client=client) as sb:
        info = sb.files.write("notes/a.txt", "hello\n", mkdirs=True, mode=0o640)
        assert info.path == "/home/user/notes/a.txt" and info.mode == 0o640 and info.size == 6
        assert sb.files.read("/home/user/notes/a.txt") == b"hello\n"
        assert sb.files.read_text("notes/a.txt") == "hello\n"
        assert [f.name for f in sb.files.list("notes")] == ["a.txt"]
        sb.files.mkdir("/tmp/x/y")
        sb.files.move("notes/a.txt", "/tmp/x/y/b.txt")
        assert not sb.files.exists("notes/a.txt") and sb.files.exists("/tmp/x/y/b.txt")
        sb.files.remove("/tmp/x", recursive=True)
        assert not sb.files.exists("/tmp/x")
        # upload and download of a file and of a directory tree
        src = tmp_path / "tree"
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "data.bin").write_bytes(os.urandom(300_000))
        (src / "top.txt").write_text("top\n")
        sb.files.upload(str(src), "/srv/tree")
        assert sb.exec("cat /srv/tree/top.txt; stat -c %s /srv/tree/sub/data.bin").stdout == "top\n300000\n"
        out = tmp_path / "back"
        sb.files.download("/srv/tree", str(out))
        assert (out / "sub" / "data.bin").read_bytes() == (src / "sub" / "data.bin").read_bytes()
        assert (out / "top.txt").read_text() == "top\n"
        single = tmp_path / "single.txt"
        single.write_text("just me")
        sb.files.upload(str(single), "/tmp/single.txt")
        sb.files.download("/tmp/single.txt", str(tmp_path / "single.back"))
        assert (tmp_path / "single.back").read_text() == "just me"


def test_lifecycle_and_list(sdk, client):
    tag = unique_name("sdkl")
    boxes = [sdk.Sandbox.create(client=client, labels={"tag": tag}) for _ in range(3)]
    try:
        listed = sdk.Sandbox.list(labels={"tag": tag}, page_size=2, client=client)
        assert sorted(b.id for b in listed) == sorted(b.id for b in boxes)
        b = boxes[0]
        b.stop()
        assert b.state == "stopped"
        with pytest.raises(sdk.ConflictError) as e:
            b.exec("true")
        assert e.value.code == "failed_precondition" and e.value.status == 409
        b.start()
        assert b.exec("echo back").stdout == "back\n"
        b.pause()
        assert b.state == "paused"
        assert sdk.Sandbox.get(b.id, client=client).state == "paused"
        b.resume()
        assert b.state == "running"
        b.pause()
        assert b.exec("echo woke").stdout == "woke\n"
        b.stop()
        b.archive()
        assert b.state == "archived"
        b.start()
        assert b.exec("echo back").stdout == "back\n"
        assert sdk.Sandbox.get(b.id, client=client).state == "running"
        assert sdk.Sandbox.get(b.name, client=client).id == b.id
    finally:
        for b in boxes:
            b.delete()


def test_typed_errors(sdk, client, server):
    with pytest.raises(sdk.InvalidArgumentError) as e:
        sdk.Sandbox.create(client=client, name="bad name!")
    assert "name" in e.value.message
    with pytest.raises(sdk.NotFoundError):
        sdk.Sandbox.get("nonexistent-box", client=client)
    with pytest.raises(ValueError):
        sdk.Client("ftp://example.invalid")
    dead = sdk.Client("http://127.0.0.1:1")
    with pytest.raises(sdk.ServerError) as e:
        sdk.Sandbox.list(client=dead)
    assert e.value.code == "unavailable"


def test_unix_socket(sdk, up, tmp_path):
    sock = tmp_path / "api.sock"
    s = Server(up, "--socket", sock, "--no-access-log")
    try:
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        c = sdk.Client(f"unix://{sock}")
        with sdk.Sandbox.create(client=c) as sb:
            assert sb.exec("echo over a unix socket").stdout == "over a unix socket\n"
        c.close()
    finally:
        s.stop()
    assert not sock.exists()  # removed when the server ends


def test_pipelines(sdk, client):
    name = unique_name("sdkp")
    doc = "```bash\necho turn $UPSTREAM_TURN\n```\n"
    r1 = sdk.run_pipeline(doc, session=name, client=client)
    assert r1.ok and r1.turn == 1 and "turn 1" in r1.report
    events = list(sdk.stream_pipeline(doc, session=name, client=client))
    assert events[-1]["type"] == "end" and events[-1]["turn"] == 2
    assert any(e["type"] == "step_end" and e["index"] == 1 and e["line"].startswith("Step 1:") for e in events)
    assert [s["turns"] for s in sdk.sessions(client=client) if s["name"] == name] == [2]
    assert len(sdk.session(name, client=client)["turns"]) == 2
    bad = None
    with pytest.raises(sdk.InvalidArgumentError) as bad:
        sdk.run_pipeline("---\nnope: 1\n---\n```bash\ntrue\n```\n", client=client)
    assert "document.md:2:1" in bad.value.message
    sdk.delete_session(name, client=client)
    with pytest.raises(sdk.NotFoundError):
        sdk.session(name, client=client)


def test_snapshots_fan_out_fork_and_export(sdk, client, tmp_path):
    base = sdk.Sandbox.create(client=client, env={"FROM": "base"}, auto_pause=0, keep_alive=True)
    assert base.info["policy"] == {"auto_pause_ms": 0, "auto_stop_ms": 24 * 3600 * 1000,
                                   "auto_archive_ms": 7 * 24 * 3600 * 1000, "keep_alive": True}
    made = [base]
    snaps = []
    try:
        base.files.write("/home/user/prepared.txt", "ready\n")
        snap = base.snapshot(unique_name("pysnap"), labels={"k": "v"})
        snaps.append(snap)
        assert len(snap.layers) == 1 and snap.info["labels"] == {"k": "v"}
        assert sdk.Snapshot.get(snap.name, client=client).id == snap.id
        assert snap.id in [s.id for s in sdk.Snapshot.list(client=client)]
        boxes = sdk.Sandbox.create_many(3, image=snap.name, client=client)
        made += boxes
        for b in boxes:
            assert b.files.read_text("/home/user/prepared.txt") == "ready\n"
            assert b.exec("echo $FROM").stdout == "base\n"
        with pytest.raises(sdk.ConflictError):
            snap.delete()
        forks = base.fork(2)
        made += forks
        assert all(f.exec("cat /home/user/prepared.txt").stdout == "ready\n" for f in forks)
        path = str(tmp_path / "snap.tar.zst")
        snap.export(path)
        assert os.path.getsize(path) > 0 and not os.path.exists(path + ".part")
        imported = sdk.Snapshot.import_file(path, name=snap.name + "-imp", client=client)
        snaps.append(imported)
        assert imported.layers == snap.layers
        with pytest.raises(sdk.NotFoundError):
            sdk.Snapshot.get("no-such-snapshot-here", client=client)
        with open(tmp_path / "bad.tar.zst", "wb") as f:
            f.write(b"not an export")
        with pytest.raises(sdk.InvalidArgumentError):
            sdk.Snapshot.import_file(str(tmp_path / "bad.tar.zst"), name="bad-import", client=client)
    finally:
        for b in made:
            b.delete()
        for s in reversed(snaps):
            s.delete()


def test_usage_report(sdk, client):
    tag = unique_name("pyuse")
    sb = sdk.Sandbox.create(client=client, labels={"team": tag})
    try:
        sb.exec("head -c 20000000 /dev/zero | sha256sum")
        rep = sdk.usage(by="label:team", labels={"team": tag}, client=client)
        assert [g["key"] for g in rep["groups"]] == [tag]
        assert rep["groups"][0]["boxes"] == 1 and rep["groups"][0]["cpu_seconds"] > 0
        with pytest.raises(sdk.InvalidArgumentError):
            sdk.usage(since="yesterday", client=client)
    finally:
        sb.delete()


def test_network_mode(sdk, client):
    sb = sdk.Sandbox.create(client=client, network="allow-all")
    try:
        assert sb.info["network"] == "allow-all" and sb.info["address"].startswith("10.")
        assert "eth0" in sb.exec("ip -o link").stdout
        sb.set_network("none")
        assert sb.info["network"] == "none" and "eth0" not in sb.exec("ip -o link").stdout
        with pytest.raises(sdk.InvalidArgumentError):
            sb.set_network("bridge")
    finally:
        sb.delete()


def test_egress_policy_traffic_and_exposed_ports(sdk, client):
    sb = sdk.Sandbox.create(client=client, network="custom", allow_domains=["example.com"],
                            deny_cidrs=["198.51.100.0/24"], headers={"api.example.com": {"Authorization": "Bearer s3"}})
    try:
        e = sb.info["egress"]
        assert e["allow_domains"] == ["example.com"] and e["deny_cidrs"] == ["198.51.100.0/24"]
        assert e["headers"] == {"api.example.com": ["Authorization"]} and "s3" not in json.dumps(sb.info)
        # A refused name is counted (the box's DNS goes to the host's resolver).
        sb.exec("getent hosts not-allowed.example.org || true")
        t = sb.traffic()
        assert set(t) >= {"destinations", "denied", "dns"}
        sb.set_network("custom", allow_domains=["*.example.com"])
        assert sb.info["egress"]["allow_domains"] == ["*.example.com"]
        assert sb.info["egress"]["headers"] == {"api.example.com": ["Authorization"]}  # kept
        sb.set_network("custom", allow_domains=["*.example.com"], headers={})
        assert sb.info["egress"]["headers"] == {}
        with pytest.raises(sdk.InvalidArgumentError):
            sb.set_network("custom", allow_cidrs=["10.0.0.0/33"])
        # An exposed port answers with its token only.
        sb.exec_background("python3 -m http.server 8123 --bind 127.0.0.1")
        sb.exec("for i in $(seq 50); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8123))\" "
                "2>/dev/null && break; sleep 0.1; done")
        x = sb.expose(8123)
        assert x["auth"] == "bearer" and x["token"]
        req = urllib.request.Request(x["url"], headers={"Authorization": "Bearer " + x["token"]})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(x["url"], timeout=10)
        assert err.value.code == 401
        assert [y["id"] for y in sb.exposures()] == [x["id"]]
        sb.unexpose(x["id"])
        assert sb.exposures() == []
    finally:
        sb.delete()


def test_durations_and_sizes_one_convention_and_readable_reprs(sdk, client):
    """Durations are seconds or strings with a unit ("300ms", "10m"), sizes bytes or "64m", as
    the CLI takes them; a bad one raises a ValueError naming the parameter before anything is
    sent; the *_ms spellings still work, with a DeprecationWarning."""
    before = len(sdk.Sandbox.list(client=client))
    for kw, words in ((dict(memory="lots"), "memory 'lots' is not a size"),
                      (dict(memory=1.5), "memory must be a number of bytes"),
                      (dict(auto_pause="soon"), "auto_pause 'soon' is not a duration"),
                      (dict(disk="1.5"), "disk '1.5' is not a size")):
        with pytest.raises((ValueError, TypeError)) as e:
            sdk.Sandbox.create(client=client, **kw)
        assert words in str(e.value), (kw, str(e.value))
    assert len(sdk.Sandbox.list(client=client)) == before
    with pytest.raises(TypeError, match="not both"):
        sdk.Sandbox.create(client=client, auto_pause=1, auto_pause_ms=1000)
    with sdk.Sandbox.create(client=client, memory="64m", auto_pause="10m", auto_stop=7200) as sb:
        assert sb.info["limits"]["memory"] == 64 << 20
        assert sb.info["policy"]["auto_pause_ms"] == 600_000 and sb.info["policy"]["auto_stop_ms"] == 7_200_000
        r = sb.exec("sleep 10", timeout="300ms")
        assert r.timed_out and r.duration < 5
        with pytest.raises(ValueError, match="timeout 'abc' is not a duration"):
            sb.exec("true", timeout="abc")
        assert [e["exec"] for e in sb.execs()] == [r.exec]  # the bad one was never sent
        assert repr(r).startswith(f"ExecResult(exec={r.exec}, exit_code=") and "timed_out=True" in repr(r)
        h = sb.exec_background("sleep 0.2")
        assert repr(h) == f"ExecHandle(exec={h.exec}, box={sb.name!r})"
        assert h.wait(timeout="10s", interval="20ms")["state"] != "running"
        assert repr(sb.files) == f"Files(box={sb.name!r})"
        assert repr(sb).startswith(f"Sandbox(id={sb.id!r}, name={sb.name!r}")
        with pytest.warns(DeprecationWarning, match="grace_ms is deprecated"):
            sb.stop(grace_ms=500)
        assert sb.state == "stopped"
        sb.start()
        sb.stop("1s")
        assert sb.state == "stopped"
    assert repr(client) == f"Client(url={client.url!r}, api_key=None)"
    assert sdk.Client(client.url, timeout="2m").timeout == 120


def test_the_readme_lists_every_call(sdk):
    """sdk/python/README.md names every public method and property of every class the package
    exports, and every function."""
    import inspect
    import re
    readme = (REPO / "sdk" / "python" / "README.md").read_text()
    spans = " ".join(re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", readme, flags=re.S)))
    missing = []
    for export in sdk.__all__:
        obj = getattr(sdk, export)
        if inspect.isfunction(obj) and not re.search(rf"\b{export}\(", spans):
            missing.append(export)
        if inspect.isclass(obj) and not issubclass(obj, Exception):
            for name, member in vars(obj).items():
                if name.startswith("_") or name in ("from_json",):
                    continue
                if not re.search(rf"\b{name}\b", spans):
                    missing.append(f"{export}.{name}")
    assert not missing, f"not in the README: {missing}"
