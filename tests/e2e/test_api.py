"""The HTTP API end to end, at the HTTP level: a real `upstream serve`, real boxes, every JSON
response checked against the published OpenAPI document."""

import http.client
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time

import pytest

from api_client import Api
from upstream_e2e import Server, unique_name, wait_until


@pytest.fixture(scope="module")
def server(up):
    s = Server(up, "--header-timeout", "2", "--max-body", "64k", "--max-upload", "8m")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def api(server):
    return Api(server.url)


@pytest.fixture(scope="module")
def abox(api):
    status, b = api("POST", "/v1/boxes", {"name": unique_name("api"), "labels": {"suite": "api"}})
    assert status == 201, b
    yield b
    api("DELETE", f"/v1/boxes/{b['id']}?force=true")


def test_health_and_openapi(api, server):
    assert api("GET", "/healthz") == (200, {"status": "ok", "version": "0.1.0"})
    status, doc = api("GET", "/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert "/v1/boxes/{box}/execs" in doc["paths"]
    assert "without authentication, on loopback only" in server.banner


def test_box_lifecycle(api):
    name = unique_name("life")
    status, b = api("POST", "/v1/boxes", {"name": name, "labels": {"team": "a"}, "env": {"GREETING": "hi"},
                                          "limits": {"cpus": 0.5, "memory": "256m", "pids": 100}})
    assert status == 201, b
    assert b["state"] == "running" and b["name"] == name
    assert b["limits"] == {"cpus": 0.5, "memory": 256 << 20, "pids": 100, "disk": b["limits"]["disk"]}
    status, got = api("GET", f"/v1/boxes/{name}")
    assert status == 200 and got["id"] == b["id"] and "usage" in got and got["events"]
    status, r = api("POST", f"/v1/boxes/{b['id']}/execs", {"shell": "echo $GREETING"})
    assert r["stdout"] == "hi\n"
    status, stopped = api("POST", f"/v1/boxes/{name}/stop", {"grace_ms": 1000})
    assert status == 200 and stopped["state"] == "stopped"
    status, err = api("POST", f"/v1/boxes/{name}/execs", {"cmd": ["true"]})
    assert status == 409 and err["code"] == "failed_precondition"
    status, started = api("POST", f"/v1/boxes/{name}/start")
    assert status == 200 and started["state"] == "running"
    status, _ = api("DELETE", f"/v1/boxes/{name}")
    assert status == 409  # running: needs force
    status, gone = api("DELETE", f"/v1/boxes/{name}?force=true")
    assert status == 200 and gone == {"id": b["id"], "removed": True}
    status, err = api("GET", f"/v1/boxes/{name}")
    assert status == 404 and err["code"] == "not_found"


def test_list_filter_and_pages(api):
    tag = unique_name("pg")
    ids = []
    for _ in range(3):
        status, b = api("POST", "/v1/boxes", {"labels": {"page": tag}})
        assert status == 201
        ids.append(b["id"])
    try:
        seen, after = [], None
        for _ in range(5):
            q = f"/v1/boxes?label=page%3D{tag}&limit=2" + (f"&after={after}" if after else "")
            status, page = api("GET", q)
            assert status == 200 and len(page["boxes"]) <= 2
            seen += [b["id"] for b in page["boxes"]]
            after = page["next"]
            if not after:
                break
        assert sorted(seen) == sorted(ids)
        status, page = api("GET", f"/v1/boxes?label=page%3D{tag}&state=stopped")
        assert page["boxes"] == []
    finally:
        for i in ids:
            api("DELETE", f"/v1/boxes/{i}?force=true")


def test_exec_result(api, abox):
    status, r = api("POST", f"/v1/boxes/{abox['id']}/execs",
                    {"cmd": ["sh", "-c", "echo out; echo err >&2; exit 7"], "env": {"X": "1"}})
    assert status == 200
    assert (r["exit_code"], r["stdout"], r["stderr"], r["state"]) == (7, "out\n", "err\n", "exited")
    assert r["duration_ms"] >= 0 and r["cpu_seconds"] >= 0
    status, r = api("POST", f"/v1/boxes/{abox['id']}/execs", {"shell": "tr a-z A-Z", "stdin": "shout\n"})
    assert r["stdout"] == "SHOUT\n"
    status, r = api("POST", f"/v1/boxes/{abox['id']}/execs", {"shell": "sleep 5", "timeout_ms": 300})
    assert r["timed_out"] is True and r["exit_code"] != 0
    status, r = api("POST", f"/v1/boxes/{abox['id']}/execs", {"cmd": ["/no/such/program"]})
    assert status == 200 and r["exit_code"] == 127
    status, hist = api("GET", f"/v1/boxes/{abox['id']}/execs?limit=3")
    assert status == 200 and len(hist["execs"]) == 3


def test_exec_stream_ndjson_in_order(api, abox):
    c, r = api.stream(f"/v1/boxes/{abox['id']}/execs",
                      {"shell": "for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.1; done; exit 3", "stream": True})
    assert r.status == 200 and r.getheader("Content-Type") == "application/x-ndjson"
    events, arrival = [], []
    for line in r:
        events.append(json.loads(line))
        arrival.append(time.monotonic())
    c.close()
    assert events[0]["type"] == "start" and events[-1]["type"] == "exit"
    assert events[-1]["exit_code"] == 3
    out = "".join(e["data"] for e in events if e["type"] == "stdout")
    err = "".join(e["data"] for e in events if e["type"] == "stderr")
    assert out == "o1\no2\no3\n" and err == "e1\ne2\ne3\n"
    # Flushed as produced: the first output arrived well before the end.
    first_out = next(i for i, e in enumerate(events) if e["type"] == "stdout")
    assert arrival[-1] - arrival[first_out] >= 0.15
    # Order: o1 comes before o2 and e1 before e2 (per stream), and o1 before e2 (across).
    seq = [e["data"].strip() for e in events if e["type"] in ("stdout", "stderr")]
    assert seq.index("o1") < seq.index("e2") and seq.index("e1") < seq.index("o3")


def test_exec_stream_sse(api, abox):
    c, r = api.stream(f"/v1/boxes/{abox['id']}/execs", {"shell": "echo hi"}, accept="text/event-stream")
    assert r.getheader("Content-Type") == "text/event-stream"
    text = r.read().decode()
    c.close()
    blocks = [b for b in text.split("\n\n") if b]
    assert [b.split("\n")[0] for b in blocks] == ["event: start", "event: stdout", "event: exit"]
    assert json.loads(blocks[1].split("data: ", 1)[1])["data"] == "hi\n"


def test_exec_stream_utf8_split_and_binary(api, abox):
    # A multi-byte character split across writes arrives whole.
    c, r = api.stream(f"/v1/boxes/{abox['id']}/execs",
                      {"shell": "printf '\\xc3'; sleep 0.2; printf '\\xa9\\n'", "stream": True})
    events = [json.loads(line) for line in r]
    c.close()
    assert "".join(e["data"] for e in events if e["type"] == "stdout") == "é\n"


def test_exec_stdin_stream(api, abox):
    c, r = api.stream(f"/v1/boxes/{abox['id']}/execs", {"shell": "while read l; do echo got:$l; done; echo bye",
                                                         "stream": True, "stdin_stream": True})
    first = json.loads(r.readline())
    assert first["type"] == "start"
    seq = first["exec"]
    side = Api(api_url(api))
    status, w = side("POST", f"/v1/boxes/{abox['id']}/execs/{seq}/stdin", b"one\n",
                     headers={"Content-Type": "application/octet-stream"})
    assert status == 200 and w["written"] == 4
    assert json.loads(r.readline()) == {"type": "stdout", "data": "got:one\n"}
    status, _ = side("POST", f"/v1/boxes/{abox['id']}/execs/{seq}/stdin?eof=true", b"two\n",
                     headers={"Content-Type": "application/octet-stream"})
    rest = [json.loads(line) for line in r]
    c.close()
    assert "".join(e.get("data", "") for e in rest if e["type"] == "stdout") == "got:two\nbye\n"
    assert rest[-1]["type"] == "exit" and rest[-1]["exit_code"] == 0
    status, err = side("POST", f"/v1/boxes/{abox['id']}/execs/{seq}/stdin", b"late\n",
                       headers={"Content-Type": "application/octet-stream"})
    assert status == 409 and err["code"] == "failed_precondition"


def api_url(api):
    return f"http://{api.host}:{api.port}"


def test_client_hangup_kills_streamed_exec(api, abox):
    marker = unique_name("hang")
    c, r = api.stream(f"/v1/boxes/{abox['id']}/execs", {"shell": f"echo {marker}; exec sleep 300", "stream": True})
    seq = json.loads(r.readline())["exec"]
    r.readline()
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()

    def ended():
        s, e = api("GET", f"/v1/boxes/{abox['id']}/execs/{seq}")
        return e["state"] != "running"
    wait_until(ended, timeout=10, what="the exec of a client that hung up to be killed")


def test_background_exec_logs_and_kill(api, abox):
    status, e = api("POST", f"/v1/boxes/{abox['id']}/execs",
                    {"shell": "echo started; echo warn >&2; exec sleep 300", "background": True})
    assert status == 202 and e["state"] == "running"
    seq = e["exec"]
    wait_until(lambda: api.raw("GET", f"/v1/boxes/{abox['id']}/execs/{seq}/logs")[2] == b"started\n",
               what="background output")
    assert api.raw("GET", f"/v1/boxes/{abox['id']}/execs/{seq}/logs?stream=stderr")[2] == b"warn\n"
    status, running = api("GET", f"/v1/boxes/{abox['id']}/execs?running=true")
    assert seq in [x["exec"] for x in running["execs"]]
    status, k = api("POST", f"/v1/boxes/{abox['id']}/execs/{seq}/kill", {"signal": "TERM"})
    assert status == 200 and k["signal"] == 15
    wait_until(lambda: api("GET", f"/v1/boxes/{abox['id']}/execs/{seq}")[1]["state"] != "running",
               what="the killed exec to end")
    status, err = api("GET", f"/v1/boxes/{abox['id']}/execs/99999")
    assert status == 404


def test_files(api, abox):
    b = f"/v1/boxes/{abox['id']}/files"
    payload = bytes(range(256)) * 1000
    status, ctype, body = api.raw("PUT", b + "?path=/tmp/d/bin.dat&mkdirs=true&mode=0600", payload,
                                  headers={"Content-Type": "application/octet-stream"})
    info = json.loads(body)
    assert status == 200 and info["size"] == len(payload) and info["mode"] == "0600" and info["path"] == "/tmp/d/bin.dat"
    assert api.raw("GET", b + "?path=/tmp/d/bin.dat")[2] == payload
    status, st = api("GET", b + "/stat?path=/tmp/d")
    assert st["type"] == "dir"
    status, ls = api("GET", b + "/list?path=/tmp/d")
    assert [e["name"] for e in ls["entries"]] == ["bin.dat"] and ls["entries"][0]["path"] == "/tmp/d/bin.dat"
    status, m = api("POST", b + "/mkdir", {"path": "/tmp/d/sub/deeper"})
    assert status == 200 and m["type"] == "dir"
    status, mv = api("POST", b + "/move", {"from": "/tmp/d/bin.dat", "to": "/tmp/d/sub/moved.dat"})
    assert status == 200 and mv["size"] == len(payload)
    # Relative paths start at the box's working directory; names with spaces survive the query.
    api.raw("PUT", b + "?path=rel%20name.txt", b"r", headers={"Content-Type": "application/octet-stream"})
    status, st = api("GET", b + "/stat?path=/home/user/rel%20name.txt")
    assert status == 200 and st["size"] == 1
    # Directories travel as tar, both ways.
    status, ctype, tar_bytes = api.raw("GET", b + "/archive?path=/tmp/d")
    assert status == 200 and ctype == "application/x-tar"
    names = tarfile.open(fileobj=io.BytesIO(tar_bytes)).getnames()
    assert any(n.endswith("sub/moved.dat") for n in names), names
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"from tar\n"
        ti = tarfile.TarInfo("x/y.txt")
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    status, up = api("PUT", b + "/archive?path=/tmp/untar", buf.getvalue(), headers={"Content-Type": "application/x-tar"})
    assert status == 200, up
    assert api.raw("GET", b + "?path=/tmp/untar/x/y.txt")[2] == b"from tar\n"
    status, _ = api("DELETE", b + "?path=/tmp/d&recursive=true")
    assert status == 200
    status, err = api("GET", b + "/stat?path=/tmp/d")
    assert status == 404
    status, err = api("GET", b + "?path=/tmp")
    assert status == 400 and "directory" in err["message"]


def test_paths_cannot_escape_the_box(api, abox, tmp_path):
    b = f"/v1/boxes/{abox['id']}/files"
    host_file = f"/tmp/upstream-escape-{unique_name()}"
    status, ctype, body = api.raw("PUT", b + f"?path=/../../../..{host_file}", b"inside",
                                  headers={"Content-Type": "application/octet-stream"})
    assert status == 200
    assert not os.path.exists(host_file)
    # ...it landed inside the box, at the normalised path.
    assert api.raw("GET", b + f"?path={host_file}")[2] == b"inside"
    # The host's secrets are not there to read (the box sees a masked /etc/shadow, or none).
    status, ctype, body = api.raw("GET", b + "?path=/../../etc/shadow")
    assert status != 200 or open("/etc/shadow", "rb").read() != body


def test_bad_input(api, abox):
    s, e = api("POST", "/v1/boxes", b"{not json", headers={"Content-Type": "application/json"})
    assert s == 400 and e["code"] == "invalid_argument" and "malformed JSON" in e["message"]
    s, e = api("POST", "/v1/boxes", {"name": "x", "colour": "red"})
    assert s == 400 and "unknown field 'colour'" in e["message"]
    s, e = api("POST", "/v1/boxes", {"name": 5})
    assert s == 400 and "'name' must be a string" in e["message"]
    s, e = api("POST", "/v1/boxes", ["a"])
    assert s == 400 and "must be an object" in e["message"]
    s, e = api("POST", "/v1/boxes", {"limits": {"memory": "lots"}})
    assert s == 400 and "memory" in e["message"]
    s, e = api("POST", "/v1/boxes", {"labels": {"upstream.tenant": "x"}})
    assert s == 400 and "reserved" in e["message"]
    s, e = api("POST", f"/v1/boxes/{abox['id']}/execs", {"cmd": ["true"], "shell": "true"})
    assert s == 400 and "exactly one" in e["message"]
    s, e = api("POST", f"/v1/boxes/{abox['id']}/execs", {"cmd": "true"})
    assert s == 400 and "array of strings" in e["message"]
    s, e = api("GET", f"/v1/boxes/{abox['id']}/execs/abc")
    assert s == 400
    s, e = api("GET", "/v1/boxes?limit=nope")
    assert s == 400 and "limit" in e["message"]
    s, e = api("GET", "/v1/nothing/here")
    assert s == 404 and e["code"] == "not_found"
    s, e = api("PATCH", "/v1/boxes")
    assert s == 405 and e["code"] == "method_not_allowed"
    s, e = api("GET", f"/v1/boxes/{abox['id']}/files")
    assert s == 400 and "'path' is required" in e["message"]
    # Over the body limit (64k here): refused before it is read, with a JSON error.
    s, ctype, body = api.raw("POST", "/v1/boxes", b"{" + b" " * (100 << 10) + b"}",
                             headers={"Content-Type": "application/json"})
    assert s == 413 and json.loads(body)["code"] == "payload_too_large"
    # An upload over its limit (8m here) is refused from its headers, before its body is sent.
    with socket.create_connection((api.host, api.port), timeout=10) as sock:
        sock.sendall(f"PUT /v1/boxes/{abox['id']}/files?path=/tmp/big HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Length: {9 << 20}\r\n\r\n".encode())
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["code"] == "payload_too_large"
    # Nothing of it was created.
    s, e = api("GET", f"/v1/boxes/{abox['id']}/files/stat?path=/tmp/big")
    assert s == 404
    # The server still serves.
    assert api("GET", "/healthz")[0] == 200


def test_garbage_and_slow_clients_do_not_stop_the_server(api, server):
    # Not HTTP at all.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 400")
    # Slowloris: 20 clients trickle a header byte by byte; others are served meanwhile, and the
    # trickling ones are cut off at the header deadline (2 s here).
    slow = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    t0 = time.monotonic()
    for _ in range(20):
        assert api("GET", "/healthz")[0] == 200
    assert time.monotonic() - t0 < 5
    closed = 0
    deadline = time.monotonic() + 8
    for s in slow:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            for _ in range(100):
                s.sendall(b"X-Slow: 1\r\n")
                if s.recv(1, socket.MSG_DONTWAIT) == b"":
                    closed += 1
                    break
                time.sleep(0.05)
        except BlockingIOError:
            time.sleep(0.05)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except OSError:
                closed += 1
        except OSError:
            closed += 1
        finally:
            s.close()
    assert closed == len(slow)


def test_metrics(api, abox):
    api("POST", f"/v1/boxes/{abox['id']}/execs", {"cmd": ["true"]})
    # Ids and unknown paths never become labels: the series stay bounded.
    api.raw("GET", "/v1/snapshots/5eed5eed5eed")
    api.raw("GET", "/v1/nothing/7a11ab1e")
    status, ctype, body = api.raw("GET", "/metrics")
    text = body.decode()
    assert status == 200 and ctype.startswith("text/plain")
    assert 'upstream_boxes{state="running"}' in text
    assert 'upstream_http_requests_total{route="/v1/boxes/{box}/execs",method="POST",status="200"}' in text
    assert "upstream_exec_duration_seconds_bucket" in text
    assert 'route="/v1/snapshots/{snapshot}",method="GET",status="404"' in text
    assert 'route="unmatched",method="GET",status="404"' in text
    assert "5eed5eed5eed" not in text and "7a11ab1e" not in text and abox["id"] not in text
    assert 'upstream_errors_total{code="invalid_argument"}' in text


def test_access_log_is_json_lines(api, server):
    api("GET", "/healthz")
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(line.get("path") == "/healthz" and line["status"] == 200 for line in lines)
    assert all("authorization" not in json.dumps(line).lower() for line in lines)


def test_server_sockets_do_not_leak_into_boxes(api, server):
    status, b = api("POST", "/v1/boxes", {})
    try:
        def sockets(pid):
            out = set()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:"):
                    out.add(target)
            return out
        shared = sockets(server.proc.pid) & sockets(b["init_pid"])
        assert shared == set(), f"the box's init holds the server's sockets {shared}"
    finally:
        api("DELETE", f"/v1/boxes/{b['id']}?force=true")


def test_openapi_document_is_generated():
    import sys
    from upstream_e2e import REPO
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_openapi.py")], capture_output=True, check=True)
    assert json.loads(out.stdout) == json.loads((REPO / "docs" / "openapi.json").read_text()), \
        "docs/openapi.json is stale: python3 scripts/gen_openapi.py > docs/openapi.json"


def test_binary_output_streams_as_base64(api, abox):
    c, r = api.stream(f"/v1/boxes/{abox['id']}/execs", {"shell": "printf 'ok\\n'; printf '\\377\\000\\376'", "stream": True})
    events = [json.loads(line) for line in r]
    c.close()
    import base64
    out = b"".join(e["data"].encode() if "data" in e else base64.b64decode(e["data_b64"])
                   for e in events if e["type"] == "stdout")
    assert out == b"ok\n\xff\x00\xfe"


def test_readme_curl_flow(server, tmp_path):
    """The README's curl commands, as a user would type them."""
    u = server.url
    name = unique_name("curl")

    def curl(*args, data=None):
        r = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, timeout=60, input=data)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    j = "Content-Type: application/json"
    box = json.loads(curl("-H", j, f"{u}/v1/boxes", "-d", json.dumps({"name": name, "limits": {"memory": "1g"}})))
    try:
        assert box["limits"]["memory"] == 1 << 30
        r = json.loads(curl("-H", j, f"{u}/v1/boxes/{name}/execs", "-d", '{"cmd":["python3","-c","print(6*7)"]}'))
        assert r["stdout"] == "42\n"
        lines = curl("-N", "-H", j, f"{u}/v1/boxes/{name}/execs", "-d", '{"shell":"echo a; echo b","stream":true}')
        events = [json.loads(x) for x in lines.splitlines()]
        assert events[0]["type"] == "start" and events[-1]["type"] == "exit"
        assert "".join(e["data"] for e in events if e["type"] == "stdout") == "a\nb\n"
        (tmp_path / "data.csv").write_text("x,y\n1,2\n")
        curl("-XPUT", f"{u}/v1/boxes/{name}/files?path=data.csv", "--data-binary", f"@{tmp_path / 'data.csv'}")
        tar_bytes = curl(f"{u}/v1/boxes/{name}/files/archive?path=/home/user")
        assert "user/data.csv" in tarfile.open(fileobj=io.BytesIO(tar_bytes)).getnames()
    finally:
        curl("-XDELETE", f"{u}/v1/boxes/{name}?force=true")


def test_pause_snapshot_fan_out_and_export_over_http(api):
    name = unique_name("snapapi")
    s, b = api("POST", "/v1/boxes", {"name": name, "env": {"K": "v"}})
    assert s == 201
    made = [b["id"]]
    snaps = []
    try:
        api("POST", f"/v1/boxes/{name}/execs", {"shell": "echo kept > /home/user/k"})
        s, p = api("POST", f"/v1/boxes/{name}/pause")
        assert s == 200 and p["state"] == "paused"
        s, snap = api("POST", f"/v1/boxes/{name}/snapshot", {"name": name + "-s", "labels": {"t": "1"}})
        assert s == 201 and snap["name"] == name + "-s" and snap["source_box"] == b["id"] and snap["labels"] == {"t": "1"}
        snaps.append(snap["id"])
        assert api("GET", f"/v1/boxes/{name}")[1]["state"] == "paused"
        s, r = api("POST", f"/v1/boxes/{name}/resume")
        assert s == 200 and r["state"] == "running"
        s, again = api("POST", f"/v1/boxes/{name}/snapshot", {"name": name + "-s"})
        assert s == 409 and again["code"] == "already_exists"
        s, lst = api("GET", "/v1/snapshots")
        assert s == 200 and snap["id"] in [x["id"] for x in lst["snapshots"]]
        assert api("GET", f"/v1/snapshots/{snap['name']}")[1]["id"] == snap["id"]
        # Fan-out: count boxes from the snapshot.
        s, many = api("POST", "/v1/boxes", {"image": snap["name"], "count": 3, "name": name + "-f"})
        assert s == 201 and [x["name"] for x in many["boxes"]] == [f"{name}-f-{i}" for i in (1, 2, 3)]
        made += [x["id"] for x in many["boxes"]]
        for x in many["boxes"]:
            s, out = api("POST", f"/v1/boxes/{x['id']}/execs", {"shell": "cat /home/user/k; echo $K"})
            assert out["stdout"] == "kept\nv\n"
        s, e = api("DELETE", f"/v1/snapshots/{snap['id']}")
        assert s == 409 and e["code"] == "failed_precondition" and "is used by" in e["message"]
        # Fork.
        s, forked = api("POST", f"/v1/boxes/{name}/fork", {"count": 2})
        assert s == 201 and len(forked["boxes"]) == 2
        made += [x["id"] for x in forked["boxes"]]
        # Export, then import under another name.
        status, ctype, blob = api.raw("GET", f"/v1/snapshots/{snap['id']}/export")
        assert status == 200 and ctype == "application/zstd" and blob[:4] == b"\x28\xb5\x2f\xfd"
        s, imp = api("PUT", f"/v1/snapshots/import?name={name}-i", blob, headers={"Content-Type": "application/zstd"})
        assert s == 201 and imp["layers"] == snap["layers"] and imp["name"] == name + "-i"
        snaps.append(imp["id"])
        s, e = api("PUT", f"/v1/snapshots/import?name={name}-j", blob[:200], headers={"Content-Type": "application/zstd"})
        assert s == 400 and e["code"] == "invalid_argument" and "snapshot export" in e["message"]
        s, e = api("PUT", f"/v1/snapshots/import?name={name}-i", blob, headers={"Content-Type": "application/zstd"})
        assert s == 409
        # Bad requests.
        for method, path, body, status, words in [
            ("POST", "/v1/boxes", {"image": "no-such-snap-q"}, 404, "no such snapshot"),
            ("POST", "/v1/boxes", {"image": snap["name"], "count": 0}, 400, "count"),
            ("POST", f"/v1/boxes/{name}/snapshot", {"name": "bad name"}, 400, "invalid snapshot name"),
            ("POST", f"/v1/boxes/{name}/snapshot", {"kind": "other"}, 400, "kind"),
            ("POST", f"/v1/boxes/{name}/fork", {"count": 5000}, 400, "count"),
            ("GET", "/v1/snapshots/no-such-snap-q", None, 404, "no such snapshot"),
            ("GET", "/v1/snapshots?kind=x", None, 400, "kind"),
            ("GET", f"/v1/images/{snap['name']}", None, 404, "no such image"),
        ]:
            s, e = api(method, path, body)
            assert s == status and words in e["message"], (method, path, s, e)
    finally:
        for i in made:
            api("DELETE", f"/v1/boxes/{i}?force=true")
        for i in reversed(snaps):
            api("DELETE", f"/v1/snapshots/{i}")
    s, lst = api("GET", "/v1/snapshots")
    assert not [x for x in lst["snapshots"] if x["name"].startswith(name)]


def test_box_policy_over_http(api):
    s, b = api("POST", "/v1/boxes", {"policy": {"auto_pause_ms": 60000, "auto_stop_ms": 0, "keep_alive": True}})
    assert s == 201, b
    try:
        assert b["policy"] == {"auto_pause_ms": 60000, "auto_stop_ms": 0, "auto_archive_ms": 7 * 24 * 3600 * 1000,
                               "keep_alive": True}
        assert b["last_active_at"]
        for bad, words in [({"auto_pause_ms": -1}, "auto_pause_ms"), ({"auto_pause_ms": "1m"}, "auto_pause_ms"),
                           ({"keep_alive": 1}, "keep_alive"), ({"nap": 1}, "unknown field 'policy.nap'"), ([], "policy")]:
            s, e = api("POST", "/v1/boxes", {"policy": bad})
            assert s == 400 and words in e["message"], (bad, e)
    finally:
        api("DELETE", f"/v1/boxes/{b['id']}?force=true")
