"""A web page in the operator's browser cannot drive a server, keyed or not: no cross-site
request is acted on (a form or a no-cors fetch sends text/plain or form bodies, and an Origin),
and a name of the page's own that resolves to the server (DNS rebinding) gets no answer."""

import http.client
import json

import pytest

from api_client import Api
from upstream_e2e import Server, unique_name


@pytest.fixture(scope="module")
def server(up):
    s = Server(up, "--no-access-log", "--host-name", "api.upstream.test", "--allow-origin",
               "https://console.upstream.test")
    try:
        yield s
    finally:
        s.stop()


def raw(server, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("Content-Type", ""), data


def box_names(up):
    return {b["name"] for b in up.json("box", "ls")}


def test_cross_site_requests_change_nothing(up, server):
    before = box_names(up)
    name = unique_name("csrf")
    body = json.dumps({"name": name})
    port = server.port
    attempts = [
        # A form post, or fetch(..., {mode: "no-cors"}): a "simple" request, no preflight.
        ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403, "cross_origin"),
        ({"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"}, 403, "cross_origin"),
        ({"Content-Type": "multipart/form-data; boundary=x", "Origin": "null"}, 403, "cross_origin"),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "cross_origin"),
        # Another site on the same host is another site.
        ({"Content-Type": "application/json", "Origin": "http://127.0.0.1:3000"}, 403, "cross_origin"),
        # Without an Origin the body still must be JSON.
        ({"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        ({}, 415, "unsupported_media_type"),
        # DNS rebinding: the page's own name, pointed at the server's address.
        ({"Content-Type": "application/json", "Host": f"rebind.evil.example:{port}"}, 421, "misdirected_request"),
        ({"Content-Type": "application/json", "Host": f"rebind.evil.example:{port}",
          "Origin": f"http://rebind.evil.example:{port}"}, 421, "misdirected_request"),
    ]
    for headers, status, code in attempts:
        s, ctype, data = raw(server, "POST", "/v1/boxes", body, headers)
        assert s == status and json.loads(data)["code"] == code, (headers, s, data)
    # Rebinding cannot read either.
    s, _, data = raw(server, "GET", "/v1/boxes", None, {"Host": "rebind.evil.example"})
    assert s == 421 and b"boxes" not in data
    # A request with no body but a foreign Origin (a form's POST to .../stop) is refused too.
    s, _, data = raw(server, "POST", "/v1/boxes/whatever/stop", None, {"Origin": "http://evil.example"})
    assert s == 403
    assert box_names(up) == before


def test_own_pages_and_configured_names_work(up, server):
    port = server.port
    made = []
    try:
        for headers in [{"Origin": f"http://127.0.0.1:{port}"},                     # the server's own page
                        {"Origin": "https://console.upstream.test"},                # --allow-origin
                        {"Host": "api.upstream.test"},                              # --host-name
                        {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}]:
            name = unique_name("own")
            h = dict({"Content-Type": "application/json; charset=utf-8"}, **headers)
            s, _, data = raw(server, "POST", "/v1/boxes", json.dumps({"name": name}), h)
            assert s == 201, (headers, s, data)
            made.append(name)
    finally:
        for n in made:
            up("box", "rm", "-f", n)


def test_raw_routes_refuse_form_types(up, server):
    api = Api(server.url)
    s, b = api("POST", "/v1/boxes", {"name": unique_name("raw")})
    try:
        c, r = api.stream(f"/v1/boxes/{b['id']}/execs", {"cmd": ["cat"], "stdin_stream": True, "stream": True})
        seq = json.loads(r.readline())["exec"]
        s, _, data = raw(server, "POST", f"/v1/boxes/{b['id']}/execs/{seq}/stdin?eof=true", b"x",
                         {"Content-Type": "text/plain"})
        assert s == 415, data
        s, _, data = raw(server, "POST", f"/v1/boxes/{b['id']}/execs/{seq}/stdin?eof=true", b"ok\n",
                         {"Content-Type": "application/octet-stream"})
        assert s == 200, data
        out = "".join(json.loads(line).get("data", "") for line in r)
        c.close()
        assert out == "ok\n"
        s, _, data = raw(server, "POST", "/v1/snapshots/import", b"x" * 10, {"Content-Type": "text/plain"})
        assert s == 415, data
    finally:
        api("DELETE", f"/v1/boxes/{b['id']}?force=true")


def test_keyed_server_refuses_them_too(own_up):
    key = json.loads(own_up.ok("--json", "keys", "create", "--tenant", "web"))["key"]
    s = Server(own_up, "--no-access-log")
    try:
        st, _, data = raw(s, "POST", "/v1/boxes", "{}", {"Content-Type": "text/plain", "Authorization": f"Bearer {key}"})
        assert st == 415, data
        st, _, data = raw(s, "GET", "/v1/boxes", None, {"Host": "rebind.evil.example", "Authorization": f"Bearer {key}"})
        assert st == 421, data
        st, _, data = raw(s, "GET", "/v1/boxes", None, {"Origin": "http://evil.example", "Authorization": f"Bearer {key}"})
        assert st == 403, data
    finally:
        s.stop()
