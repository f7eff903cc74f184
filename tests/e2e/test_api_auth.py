"""API keys, tenants and their limits, and the server's life: restarts (even kill -9) never
touch running boxes."""

import json
import signal
import subprocess
import time

import pytest

from api_client import Api
from upstream_e2e import Server, unique_name, wait_until


@pytest.fixture(scope="module")
def keys(own_up):
    a = json.loads(own_up.ok("--json", "keys", "create", "--tenant", "acme", "--name", "ci", "--max-boxes", "2",
                             "--max-execs", "1"))
    b = json.loads(own_up.ok("--json", "keys", "create", "--tenant", "globex"))
    return {"acme": a, "globex": b}


@pytest.fixture(scope="module")
def server(own_up, keys):
    s = Server(own_up)
    try:
        yield s
    finally:
        s.stop()


def test_keys_cli(own_up, keys):
    a = keys["acme"]
    assert a["key"].startswith("up_") and a["tenant"] == "acme" and a["name"] == "ci"
    listed = own_up.json("keys", "ls")
    assert {k["id"] for k in listed} >= {keys["acme"]["id"], keys["globex"]["id"]}
    assert "key" not in listed[0] and a["key"] not in own_up.ok("keys", "ls")
    # Only a hash is stored: the secret appears nowhere in the state directory.
    out = subprocess.run(["grep", "-r", "-l", "-F", a["key"].split("_")[2], own_up.home], capture_output=True)
    assert out.stdout == b""
    code, out, err = own_up("keys", "create", "--tenant", "Bad Name")
    assert code == 1 and "tenant name" in err
    code, out, err = own_up("keys", "revoke", "000000000000")
    assert code == 1 and "no such API key" in err


def test_keys_are_required(server, keys):
    assert "API keys required" in server.banner
    anon = Api(server.url)
    s, e = anon("GET", "/v1/boxes")
    assert s == 401 and e["code"] == "unauthenticated"
    s, e = anon("GET", "/v1/boxes", key="up_" + "0" * 12 + "_" + "0" * 64)
    assert s == 401
    s, e = anon("GET", "/v1/boxes", key=keys["acme"]["key"][:-1] + "x")
    assert s == 401
    s, e = anon("GET", "/metrics")
    assert s == 401
    # Health and the API description stay open.
    assert anon("GET", "/healthz")[0] == 200
    assert anon("GET", "/v1/openapi.json")[0] == 200
    s, info = Api(server.url, keys["acme"]["key"])("GET", "/v1/info")
    assert s == 200 and info["tenant"] == "acme" and info["auth"] is True


def test_access_log_names_the_key_and_its_tenant(server, keys):
    acme = Api(server.url, keys["acme"]["key"])
    assert acme("GET", "/v1/boxes/acme-log")[0] == 404
    assert Api(server.url)("GET", "/v1/boxes/anon-log")[0] == 401

    def entry(mark):
        for line in server.log().splitlines():
            if line.startswith("{") and mark in line:
                return json.loads(line)
        return None
    wait_until(lambda: entry("acme-log") and entry("anon-log"), timeout=5)
    mine = entry("acme-log")
    assert mine["key"] == keys["acme"]["id"] and mine["tenant"] == "acme" and mine["status"] == 404
    anon = entry("anon-log")
    assert anon["status"] == 401 and "key" not in anon and "tenant" not in anon
    # The public id only: no part of the secret reaches the log.
    assert keys["acme"]["key"].split("_")[2] not in server.log()


def test_tenants_cannot_see_each_other(server, keys):
    acme = Api(server.url, keys["acme"]["key"])
    globex = Api(server.url, keys["globex"]["key"])
    s, box = acme("POST", "/v1/boxes", {"name": unique_name("acme")})
    assert s == 201 and "upstream.tenant" in box["labels"]
    try:
        for ref in (box["id"], box["name"], box["id"][:6]):
            for method, path, body in [("GET", f"/v1/boxes/{ref}", None),
                                       ("POST", f"/v1/boxes/{ref}/execs", {"cmd": ["true"]}),
                                       ("GET", f"/v1/boxes/{ref}/files?path=/etc/hostname", None),
                                       ("POST", f"/v1/boxes/{ref}/stop", None),
                                       ("DELETE", f"/v1/boxes/{ref}?force=true", None)]:
                s, e = globex(method, path, body)
                assert s == 404 and e["message"] == f"no such box: {ref}", (method, path, s, e)
        s, page = globex("GET", "/v1/boxes")
        assert box["id"] not in [b["id"] for b in page["boxes"]]
        s, page = acme("GET", "/v1/boxes")
        assert box["id"] in [b["id"] for b in page["boxes"]]
        # Still there and running after all that.
        assert acme("GET", f"/v1/boxes/{box['id']}")[1]["state"] == "running"
    finally:
        acme("DELETE", f"/v1/boxes/{box['id']}?force=true")


def test_tenants_snapshots_are_their_own(server, keys):
    acme = Api(server.url, keys["acme"]["key"])
    globex = Api(server.url, keys["globex"]["key"])
    s, box = acme("POST", "/v1/boxes", {"name": unique_name("acmes")})
    assert s == 201
    snap = None
    try:
        s, snap = acme("POST", f"/v1/boxes/{box['id']}/snapshot", {"name": unique_name("acmesnap")})
        assert s == 201 and snap["labels"].get("upstream.tenant") == "acme"
        for ref in (snap["id"], snap["name"]):
            for method, path, body in [("GET", f"/v1/snapshots/{ref}", None),
                                       ("GET", f"/v1/snapshots/{ref}/export", None),
                                       ("DELETE", f"/v1/snapshots/{ref}", None),
                                       ("POST", "/v1/boxes", {"image": ref})]:
                s, _, data = globex.raw(method, path, body)
                assert s == 404, (method, path, s, data)
        assert snap["id"] not in [x["id"] for x in globex("GET", "/v1/snapshots")[1]["snapshots"]]
        assert snap["id"] in [x["id"] for x in acme("GET", "/v1/snapshots")[1]["snapshots"]]
        s, e = globex("POST", f"/v1/boxes/{box['id']}/fork", {})
        assert s == 404
        # The tenant's box limit counts fan-out too.
        s, e = acme("POST", "/v1/boxes", {"image": snap["name"], "count": 2})
        assert s == 429 and "limit" in e["message"]
    finally:
        acme("DELETE", f"/v1/boxes/{box['id']}?force=true")
        if snap:
            acme("DELETE", f"/v1/snapshots/{snap['id']}")


def test_tenant_limits(server, keys):
    acme = Api(server.url, keys["acme"]["key"])
    made = []
    try:
        for _ in range(2):
            s, b = acme("POST", "/v1/boxes", {})
            assert s == 201
            made.append(b["id"])
        s, e = acme("POST", "/v1/boxes", {})
        assert s == 429 and e["code"] == "resource_exhausted" and "2 boxes" in e["message"]
        # One concurrent exec: a second one while the first runs is refused.
        c, r = acme.stream(f"/v1/boxes/{made[0]}/execs", {"shell": "echo go; sleep 1", "stream": True})
        r.readline()
        s, e = acme("POST", f"/v1/boxes/{made[1]}/execs", {"cmd": ["true"]})
        assert s == 429 and "limit" in e["message"]
        r.read()
        c.close()
        s, res = acme("POST", f"/v1/boxes/{made[1]}/execs", {"cmd": ["true"]})
        assert s == 200 and res["exit_code"] == 0
    finally:
        for i in made:
            acme("DELETE", f"/v1/boxes/{i}?force=true")


def test_revoked_key_stops_working(own_up, server):
    k = json.loads(own_up.ok("--json", "keys", "create", "--tenant", "temp"))
    api = Api(server.url, k["key"])
    assert api("GET", "/v1/boxes")[0] == 200
    own_up.ok("keys", "revoke", k["id"])
    s, e = api("GET", "/v1/boxes")
    assert s == 401
    assert any(x["id"] == k["id"] and x["revoked_at"] for x in own_up.json("keys", "ls", "--all"))


def test_open_server_refuses_non_loopback(up):
    # `up` has no keys: listening beyond loopback would open it to anyone.
    code, out, err = up("serve", "--listen", "0.0.0.0:0", timeout=30)
    assert code == 1 and "no API keys exist" in err
    code, out, err = up("serve", "--listen", "nonsense", timeout=30)
    assert code == 1 and "HOST:PORT" in err


def test_restart_and_kill9_keep_boxes(own_up, keys):
    key = keys["globex"]["key"]
    s1 = Server(own_up)
    api = Api(s1.url, key)
    s, box = api("POST", "/v1/boxes", {"name": unique_name("keep")})
    assert s == 201
    try:
        s, bg = api("POST", f"/v1/boxes/{box['id']}/execs", {"shell": "sleep 300", "background": True})
        api("PUT", f"/v1/boxes/{box['id']}/files?path=/home/user/state.txt", b"kept",
            headers={"Content-Type": "application/octet-stream"})
        assert s1.stop(signal.SIGKILL) == -9
        init_pid = box["init_pid"]
        # The box's init and its processes outlived the server.
        with open(f"/proc/{init_pid}/status"):
            pass
        s2 = Server(own_up)
        try:
            api = Api(s2.url, key)
            s, again = api("GET", f"/v1/boxes/{box['id']}")
            assert s == 200 and again["state"] == "running" and again["init_pid"] == init_pid
            assert api.raw("GET", f"/v1/boxes/{box['id']}/files?path=state.txt")[2] == b"kept"
            s, e = api("GET", f"/v1/boxes/{box['id']}/execs/{bg['exec']}")
            assert e["state"] == "running"
            s, r = api("POST", f"/v1/boxes/{box['id']}/execs", {"cmd": ["echo", "still here"]})
            assert r["stdout"] == "still here\n"
            # Graceful stop: SIGTERM ends the server with 0, the box stays.
            assert s2.stop(signal.SIGTERM) == 0
        finally:
            s2.stop()
        assert own_up.json("box", "inspect", box["id"])["state"] == "running"
    finally:
        own_up("box", "rm", "-f", box["id"])


def test_sigterm_waits_for_requests_in_flight(own_up, keys):
    key = keys["globex"]["key"]
    srv = Server(own_up)
    api = Api(srv.url, key)
    s, box = api("POST", "/v1/boxes", {})
    try:
        c, r = api.stream(f"/v1/boxes/{box['id']}/execs", {"shell": "sleep 1; echo done", "stream": True})
        r.readline()
        srv.proc.send_signal(signal.SIGTERM)
        rest = [json.loads(x) for x in r]
        c.close()
        assert rest[-1]["type"] == "exit" and rest[-1]["exit_code"] == 0
        # It ends by itself once the request is answered (a second SIGTERM would end it at once).
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
        own_up("box", "rm", "-f", box["id"])
