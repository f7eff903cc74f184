"""Exposed ports: `box expose BOX PORT [--auth bearer|basic]` gives a URL on the host that forwards
HTTP and WebSocket traffic to a port inside the box (even one bound to the box's loopback), for
requests that carry the generated credentials; without them, 401. The credentials never reach the
box. Revoked exposures stop answering. Over loopback only."""

import base64
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from upstream_e2e import wait_until

HERE = Path(__file__).resolve().parent


def start_server(up, box, port=8000):
    up.ok("box", "cp", str(HERE / "boxserver.py"), f"{box}:/tmp/boxserver.py")
    up.ok("box", "exec", "-d", box, "--", "python3", "/tmp/boxserver.py", str(port))
    wait_until(lambda: up("box", "exec", box, "--", "python3", "-c",
                          f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)")[0] == 0,
               timeout=15, what="the server in the box")


def get(url, auth=None):
    req = urllib.request.Request(url + "headers")
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate")


def websocket_echo(url, auth, message):
    host, port = url.split("//")[1].rstrip("/").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: {auth}\r\n\r\n").encode())
    f = s.makefile("rb")
    status = f.readline().decode()
    while f.readline() not in (b"\r\n", b""):
        pass
    if " 101 " not in status:
        return status.strip()
    replies = []
    for m in (message, message + " again"):
        data, mask = m.encode(), os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(data)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(data)))
        b1, b2 = f.read(2)
        replies.append(f.read(b2 & 0x7F).decode())
    s.close()
    return replies


def test_expose_with_a_bearer_token(up):
    _, b = up.create("--network", "allow-all")
    try:
        start_server(up, b)
        e = json.loads(up.ok("--json", "box", "expose", b, "8000"))
        assert e["auth"] == "bearer" and e["port"] == 8000 and e["url"].startswith("http://127.0.0.1:")
        token = "Bearer " + e["token"]
        assert get(e["url"]) == (401, 'Bearer realm="upstream"')
        assert get(e["url"], "Bearer wrong")[0] == 401
        status, headers = get(e["url"], token)
        assert status == 200 and "authorization" not in headers  # the credentials stay outside
        assert websocket_echo(e["url"], token, "hello") == ["echo: hello", "echo: hello again"]
        assert "401" in websocket_echo(e["url"], "Bearer wrong", "hello")
        # Listed (without the token), and revoked.
        listed = json.loads(up.ok("--json", "box", "exposures", b))
        assert [x["id"] for x in listed] == [e["id"]] and "token" not in listed[0]
        assert e["id"] in up.ok("box", "exposures")
        up.ok("box", "unexpose", b, e["id"])
        with pytest.raises(OSError):
            urllib.request.urlopen(e["url"], timeout=3)
        assert json.loads(up.ok("--json", "box", "exposures", b)) == []
    finally:
        up.rm(b)


def test_expose_with_basic_credentials_survives_a_restart(up):
    _, b = up.create("--network", "allow-all")
    try:
        start_server(up, b, 8001)
        e = json.loads(up.ok("--json", "box", "expose", b, "8001", "--auth", "basic"))
        good = "Basic " + base64.b64encode(f"{e['username']}:{e['password']}".encode()).decode()
        bad = "Basic " + base64.b64encode(f"{e['username']}:nope".encode()).decode()
        assert get(e["url"], good)[0] == 200
        assert get(e["url"], bad) == (401, 'Basic realm="upstream"')
        assert get(e["url"], "Bearer " + e["password"])[0] == 401
        # A stopped box's URL does not answer; started again, it does (same URL, same password).
        up.ok("box", "stop", b)
        with pytest.raises(OSError):
            urllib.request.urlopen(e["url"], timeout=3)
        up.ok("box", "start", b)
        start_server(up, b, 8001)
        wait_until(lambda: get(e["url"], good)[0] == 200, timeout=10, what="the exposure after a restart")
    finally:
        up.rm(b)


def test_a_box_without_a_network_is_exposed_ingress_only(up):
    """Exposing needs no egress: a --network none box's port is reachable at its URL while the
    box itself still reaches nothing (no interface but loopback); the exposure survives a
    restart and network changes, and goes with unexpose."""
    _, b = up.create()
    try:
        start_server(up, b, 8002)
        e = json.loads(up.ok("--json", "box", "expose", b, "8002"))
        token = "Bearer " + e["token"]
        assert get(e["url"])[0] == 401
        status, headers = get(e["url"], token)
        assert status == 200 and "authorization" not in headers
        assert websocket_echo(e["url"], token, "hi") == ["echo: hi", "echo: hi again"]
        # The box has no way out: loopback is its only interface, and nothing answers outside.
        links = up.ok("box", "exec", b, "--", "cat", "/proc/net/dev")
        assert [l.split(":")[0].strip() for l in links.splitlines()[2:]] == ["lo"], links
        rc, _, err = up("box", "exec", b, "--", "python3", "-c",
                        "import socket; socket.create_connection(('10.200.0.1', 53), 2)")
        assert rc != 0 and "unreachable" in err, err
        assert up.inspect(b)["network"] == "none"
        # Across a restart, and a network given and taken back.
        up.ok("box", "stop", b)
        up.ok("box", "start", b)
        start_server(up, b, 8002)
        wait_until(lambda: get(e["url"], token)[0] == 200, timeout=10, what="the exposure after a restart")
        up.ok("box", "network", b, "allow-all")
        assert get(e["url"], token)[0] == 200
        up.ok("box", "network", b, "none")
        wait_until(lambda: get(e["url"], token)[0] == 200, timeout=10, what="the exposure after the network went")
        up.ok("box", "unexpose", b, "8002")
        with pytest.raises(OSError):
            urllib.request.urlopen(e["url"], timeout=3)
    finally:
        up.rm(b)


def test_bad_exposures_change_nothing(up):
    _, b = up.create("--network", "allow-all")
    try:
        for args, message in ((["0"], "invalid port 0"), (["70000"], "invalid port 70000"),
                              (["8000", "--auth", "digest"], "invalid auth 'digest'")):
            rc, _, err = up("box", "expose", b, *args)
            assert rc != 0 and message in err, err
        rc, _, err = up("box", "unexpose", b, "ex-nothing")
        assert rc != 0 and "has no exposure 'ex-nothing'" in err
        up.ok("box", "expose", b, "8000")
        rc, _, err = up("box", "expose", b, "8000")
        assert rc != 0 and "already exposed" in err
        assert len(json.loads(up.ok("--json", "box", "exposures", b))) == 1
    finally:
        up.rm(b)


def test_ls_shows_network_and_ports_and_inspect_the_egress_policy(up):
    _, b = up.create("--network", "custom", "--allow-domain", "api.example.test", "--allow-cidr",
                     "10.9.0.0/16", "--header", "api.example.test=Authorization: Bearer s3cr3t")
    try:
        up.ok("box", "expose", b, "8000")
        up.ok("box", "expose", b, "8001")
        row = next(l for l in up.ok("box", "ls").splitlines() if f" {b} " in l)
        assert row.split()[4:6] == ["custom", "8000,8001"], row
        text = up.ok("box", "inspect", b)
        assert "api.example.test" in text and "10.9.0.0/16" in text, text
        assert "api.example.test (Authorization)" in text and "s3cr3t" not in text, text
    finally:
        up.rm(b)
