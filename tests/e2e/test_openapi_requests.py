"""The check that clients send only requests the OpenAPI document describes (checking_proxy.py,
through which the CLI over HTTP and both SDKs reach the server in these tests) finds what it must
and only that."""

import json
import urllib.error
import urllib.request

import pytest

from checking_proxy import CheckingProxy, check_request
from upstream_e2e import Server


def test_requests_outside_the_document_are_found():
    assert check_request("POST", "/v1/boxes", "application/json", b'{"name": "a", "limits": {"cpus": 1}}') == []
    assert check_request("GET", "/v1/boxes?label=a=b", None, b"") == []
    # An unknown field, a wrong type, a value out of range.
    (v,) = check_request("POST", "/v1/boxes", "application/json", b'{"name": "a", "colour": "red"}')
    assert "POST /v1/boxes" in v and "colour" in v
    (v,) = check_request("POST", "/v1/boxes", "application/json", b'{"name": 7}')
    assert "not of type 'string'" in v and "at name" in v
    (v,) = check_request("POST", "/v1/boxes/b1/expose", "application/json", b'{"port": 0}')
    assert "minimum" in v and "at port" in v
    # A body where none is taken, no body where one is required, the wrong content type.
    (v,) = check_request("GET", "/v1/boxes/b1", "application/json", b"{}")
    assert "takes none" in v
    (v,) = check_request("POST", "/v1/boxes/b1/execs", None, b"")
    assert "requires a body" in v
    (v,) = check_request("POST", "/v1/boxes/b1/execs", "text/plain", b'{"cmd": ["true"]}')
    assert "'text/plain'" in v
    (v,) = check_request("POST", "/v1/boxes/b1/execs", "application/json", b"{not json")
    assert "not JSON" in v
    # A route the document does not have.
    (v,) = check_request("POST", "/v1/boxes/b1/teleport", "application/json", b"{}")
    assert "not in the OpenAPI document" in v


@pytest.fixture(scope="module")
def relay(up):
    s = Server(up, "--no-access-log")
    p = CheckingProxy(s.url)
    try:
        yield p
    finally:
        p.close()
        s.stop()


def call(relay, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(relay.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_only_requests_the_server_accepted_count(relay):
    before = relay.requests
    status, box = call(relay, "POST", "/v1/boxes", {"labels": {"t": "relay"}})
    assert status == 201, box
    try:
        # Refused by the server (400): a bad request sent on purpose is not the client's mistake.
        status, err = call(relay, "POST", f"/v1/boxes/{box['id']}/expose", {"port": 0, "auth": "bearer"})
        assert status == 400 and err["code"] == "invalid_argument", err
        status, out = call(relay, "POST", f"/v1/boxes/{box['id']}/execs", {"shell": "echo hi"})
        assert status == 200 and out["stdout"] == "hi\n", out
        assert relay.take_violations() == []
    finally:
        assert call(relay, "DELETE", f"/v1/boxes/{box['id']}?force=true")[0] in (200, 204)
    assert relay.requests - before == 4
