"""Pipelines over HTTP: documents run as turns through the API (and through the CLI with
UPSTREAM_URL set), sessions and their context stores, per tenant."""

import io
import json
import shutil
import subprocess
import tarfile

import pytest

from api_client import Api
from upstream_e2e import REPO, Server, unique_name

TWO_STEPS = "# Two steps\n\n```bash\nmkdir -p out && echo hello > out/a.txt\nexport KEPT=yes\n```\n\n```bash\ncat out/a.txt\n```\n"


@pytest.fixture(scope="module")
def server(up):
    s = Server(up)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def api(server):
    return Api(server.url)


def test_run_a_document(api):
    doc = (REPO / "examples" / "csv-analysis.md").read_text()
    s, r = api("POST", "/v1/pipelines", {"document": doc, "name": "csv.md"})
    assert s == 200, r
    assert r["exit_code"] == 0 and r["status"] == "succeeded"
    assert r["run_id"] and r["turn"] == 1 and r["session"] is None
    assert r["report"].count("<!-- upstream:result -->") == 5
    assert "Running csv.md: 5 steps" in r["progress"]
    assert "/spool/" not in r["progress"] and "/spool/" not in r["report"]


def test_failed_step_and_stream(api):
    c, resp = api.stream("/v1/pipelines", {"document": "```bash\necho one\n```\n\n```bash\necho two >&2; exit 3\n```\n",
                                            "stream": True, "verbose": True})
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/x-ndjson"
    events = [json.loads(line) for line in resp]
    c.close()
    # Every event is one the API describes; steps come as structured events with their lines.
    import jsonschema
    from openapi_check import SPEC
    validator = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/PipelineEvent", "components": SPEC["components"]})
    for e in events:
        validator.validate(e)
    types = [e["type"] for e in events]
    assert types.count("step_start") == 2 and types.count("step_end") == 2 and types.count("summary") == 1, types
    ends = [e for e in events if e["type"] == "step_end"]
    assert (ends[0]["status"], ends[0]["exit_code"]) == ("ok", 0)
    assert (ends[1]["status"], ends[1]["exit_code"], ends[1]["index"]) == ("failed", 3, 2)
    assert isinstance(ends[1]["duration_ms"], int)
    outputs = [(e["index"], e["stream"], e["data"]) for e in events if e["type"] == "output"]
    assert (1, "stdout", "one\n") in outputs and (2, "stderr", "two\n") in outputs, outputs
    summary = next(e for e in events if e["type"] == "summary")
    assert summary["steps"] == 2 and summary["succeeded"] == 1 and summary["failed"] == [{"index": 2, "name": "echo two >&2; exit 3"}], summary
    assert summary["line"].startswith("Failed: 1 of 2 steps succeeded")
    end = events[-1]
    assert end["type"] == "end" and end["exit_code"] == 1 and end["status"] == "failed"
    lines = [e["line"] for e in events if "line" in e and e["type"] != "end"]
    assert any(line.startswith("Step 2: ") and "failed (exit 3" in line for line in lines), lines
    assert "**Result:** exit 3" in end["report"]


def test_session_turns_and_context(api):
    name = unique_name("sess")
    s, t1 = api("POST", "/v1/pipelines", {"document": TWO_STEPS, "session": name})
    assert s == 200 and t1["turn"] == 1 and t1["session"] == name, t1
    # The next turn starts where the last ended: the files, the directory, the variables.
    s, t2 = api("POST", "/v1/pipelines", {"document": f"---\nsession: {name}\n---\n```bash\npwd; echo $KEPT; ls\n```\n"})
    assert s == 200 and t2["turn"] == 2 and t2["status"] == "succeeded", t2
    assert "/home/user\nyes\nout" in t2["report"]
    s, listed = api("GET", "/v1/sessions")
    assert name in [x["name"] for x in listed["sessions"]]
    s, shown = api("GET", f"/v1/sessions/{name}")
    assert [t["turn"] for t in shown["turns"]] == [1, 2] and shown["env"]["KEPT"] == "yes"
    s, manifest = api("GET", f"/v1/sessions/{name}/context")
    assert s == 200 and len(manifest["turns"]) == 2
    status, ctype, body = api.raw("GET", f"/v1/sessions/{name}/export")
    assert status == 200 and ctype == "application/x-tar"
    names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
    assert f"{name}/turn-1/document.md" in names and f"{name}/turn-2/document.md" in names
    box = shown["box_id"]
    assert api("GET", f"/v1/boxes/{box}")[0] == 200
    s, gone = api("DELETE", f"/v1/sessions/{name}")
    assert s == 200 and gone["removed"]
    assert api("GET", f"/v1/sessions/{name}")[0] == 404
    assert api("GET", f"/v1/boxes/{box}")[0] == 404


def test_bad_documents(api):
    s, e = api("POST", "/v1/pipelines", {"document": "---\nbogus: 1\n---\n```bash\necho\n```\n", "name": "bad.md"})
    assert s == 400 and e["message"].startswith("bad.md:2:1: front matter: unknown key 'bogus'")
    s, e = api("POST", "/v1/pipelines", {"document": "just prose\n"})
    assert s == 400 and "has no steps" in e["message"]
    s, e = api("POST", "/v1/pipelines", {"document": "```bash\ntrue\n```\n", "name": "../x.md"})
    assert s == 400 and "'name'" in e["message"]
    s, e = api("POST", "/v1/pipelines", {"document": "```bash\ntrue\n```\n", "session": "no spaces allowed"})
    assert s == 400 and "session" in e["message"]
    s, e = api("POST", "/v1/pipelines", {"doc": "x"})
    assert s == 400 and "unknown field 'doc'" in e["message"]
    # The box's network as for POST /v1/boxes, but never headers (a document's box gets no keys).
    one = "```bash\ntrue\n```\n"
    for body, message in [
        ({"network": "open"}, "invalid network mode 'open'"),
        ({"network": "custom", "egress": {"headers": {"api.test": {"Authorization": "x"}}}},
         "a pipeline's box takes no headers"),
        ({"egress": {"allow_domains": ["pypi.org"]}}, "apply to network mode custom, not none"),
        ({"network": "custom", "egress": {"allow_cidrs": ["10.0.0.0/33"]}}, "invalid allowed CIDR"),
    ]:
        s, e = api("POST", "/v1/pipelines", {"document": one, **body})
        assert s == 400 and message in e["message"], (body, e)
    s, r = api("POST", "/v1/pipelines", {"document": "```bash\nip -o link | grep -c eth0\n```\n",
                                         "network": "allow-all"})
    assert s == 200 and r["exit_code"] == 0 and "\n1\n" in r["report"], r
    s, e = api("GET", "/v1/sessions/never-was")
    assert s == 404


def test_cli_run_over_http(up, server, tmp_path):
    env = dict(up.env, UPSTREAM_URL=server.url)
    import subprocess
    work = tmp_path / "w"
    shutil.copytree(REPO / "examples" / "research", work)
    session = unique_name("cli")
    for doc in ("1-collect.md", "2-analyse.md"):
        r = subprocess.run([up.binary, "run", "--session", session, doc], cwd=work, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"Report written to {doc}" in r.stdout
    assert "Context loaded: 4 artifacts from 1 previous turn" in r.stdout
    # The session and context commands say the same over HTTP as on the state directory.
    local = dict(up.env)
    local.pop("UPSTREAM_URL", None)

    def both(*args):
        outs = [subprocess.run([up.binary, *args], env=e, capture_output=True, text=True, timeout=60)
                for e in (local, env)]
        for o in outs:
            assert o.returncode == 0, o.stderr
        return outs[0].stdout, outs[1].stdout
    a, b = both("--json", "session", "ls")
    assert json.loads(a) == json.loads(b) and session in a
    a, b = both("--json", "context", "show", session)
    assert json.loads(a) == json.loads(b)
    a, b = both("session", "show", session)
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("context:")]
    assert strip(a) == strip(b) and "1-collect.md" in a
    a, b = both("context", "show", session, "--turn", "2")
    assert [x for x in a.splitlines() if not x.startswith("stored in")] == \
        [x for x in b.splitlines() if not x.startswith("stored in")]
    r = subprocess.run([up.binary, "context", "export", session, "-o", str(tmp_path / "s.tar")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{session}/turn-2/document.md" in tarfile.open(tmp_path / "s.tar").getnames()
    r = subprocess.run([up.binary, "session", "rm", session, "no-such-session"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "no session 'no-such-session'" in r.stderr
    r = subprocess.run([up.binary, "session", "rm", session], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == f"{session}\n"
    assert session not in subprocess.run([up.binary, "session", "ls"], env=local, capture_output=True,
                                         text=True).stdout
    assert "<!-- upstream:result -->" in (work / "2-analyse.md").read_text()
    # A bad document: exit 2, the file untouched; a failing step: exit 1.
    bad = tmp_path / "bad.md"
    bad.write_text("---\nbogus: 1\n---\n```bash\necho\n```\n")
    before = bad.read_bytes()
    r = subprocess.run([up.binary, "run", str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown key 'bogus'" in r.stderr and bad.read_bytes() == before
    fail = tmp_path / "fail.md"
    fail.write_text("```bash\nexit 5\n```\n")
    r = subprocess.run([up.binary, "run", str(fail), "-o", str(tmp_path / "out.md")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "**Result:** exit 5" in (tmp_path / "out.md").read_text()
    assert fail.read_text() == "```bash\nexit 5\n```\n"


def test_sessions_belong_to_tenants(own_up):
    keys = {t: json.loads(own_up.ok("--json", "keys", "create", "--tenant", t))["key"] for t in ("pa", "pb")}
    srv = Server(own_up)
    try:
        a, b = Api(srv.url, keys["pa"]), Api(srv.url, keys["pb"])
        doc = "---\nsession: shared\n---\n```bash\necho $UPSTREAM_TURN >> turns.txt; cat turns.txt\n```\n"
        for _ in range(2):
            s, r = a("POST", "/v1/pipelines", {"document": doc})
            assert s == 200, r
        s, r = b("POST", "/v1/pipelines", {"document": doc})
        # Same name, another tenant: a session of its own, turn 1, in a box of its own.
        assert s == 200 and r["turn"] == 1 and r["session"] == "shared"
        assert "pa_" not in r["report"] and "pb_" not in r["report"]
        s, mine = b("GET", "/v1/sessions")
        assert [x["name"] for x in mine["sessions"]] == ["shared"] and mine["sessions"][0]["turns"] == 1
        s, theirs = a("GET", "/v1/sessions/shared")
        assert len(theirs["turns"]) == 2
        assert b("GET", f"/v1/boxes/{theirs['box_id']}")[0] == 404
        assert a("GET", f"/v1/boxes/{theirs['box_id']}")[0] == 200
    finally:
        srv.stop()


def test_a_tenants_sessions_show_by_the_names_it_gave(own_up, tmp_path):
    """Locally and for the installation's keys, a tenant's session is listed under the name the
    tenant gave, with its tenant, and named TENANT/NAME; an operator session whose name looks
    like a tenant's (pc_mine) is not that tenant's."""
    key = json.loads(own_up.ok("--json", "keys", "create", "--tenant", "pc"))["key"]
    operator = json.loads(own_up.ok("--json", "keys", "create", "--operator"))["key"]
    doc = tmp_path / "doc.md"
    doc.write_text("```bash\necho turn $UPSTREAM_TURN\n```\n")
    own_up.ok("run", "--session", "pc_mine", str(doc))
    srv = Server(own_up)
    try:
        a, op = Api(srv.url, key), Api(srv.url, operator)
        s, r = a("POST", "/v1/pipelines", {"document": doc.read_text(), "session": "s1"})
        assert s == 200 and r["session"] == "s1", r
        # The tenant sees its own session only, not the operator's pc_mine.
        s, mine = a("GET", "/v1/sessions")
        assert [x["name"] for x in mine["sessions"]] == ["s1"] and "tenant" not in mine["sessions"][0]
        assert a("GET", "/v1/sessions/mine")[0] == 404
        assert a("GET", "/v1/sessions/s1?tenant=pb")[0] == 400
        # The installation's key sees both, each with its tenant, and names the tenant's by ?tenant=.
        s, all_ = op("GET", "/v1/sessions")
        mine = lambda listed: sorted((x["name"], x["tenant"]) for x in listed if x["tenant"] == "pc" or x["name"] == "pc_mine")
        assert mine(all_["sessions"]) == [("pc_mine", None), ("s1", "pc")]
        s, one = op("GET", "/v1/sessions/s1?tenant=pc")
        assert s == 200 and len(one["turns"]) == 1
        assert op("GET", "/v1/sessions/s1")[0] == 404
        assert op("GET", "/v1/sessions/s1?tenant=Bad_Name")[0] == 400
        # The local CLI: a TENANT column, the tenant's name, and TENANT/NAME to name it.
        listed = own_up.json("session", "ls")
        assert mine(listed) == [("pc_mine", None), ("s1", "pc")]
        table = own_up.ok("session", "ls").splitlines()
        assert table[0].split()[:3] == ["SESSION", "TENANT", "TURNS"]
        assert any(line.split()[:2] == ["s1", "pc"] for line in table[1:]), table
        assert own_up.json("session", "show", "pc/s1")["name"] == "pc/s1"
        assert len(own_up.json("session", "show", "pc/s1")["turns"]) == 1
        code, _, err = own_up("session", "show", "pb/s1")
        assert code != 0 and "no session or run 'pb/s1'" in err
        code, _, err = own_up("session", "show", "pa/")
        assert code != 0 and "expected NAME or TENANT/NAME" in err
        # Over HTTP with the installation's key, the same names.
        remote = dict(own_up.env, UPSTREAM_URL=srv.url, UPSTREAM_API_KEY=operator)
        r = subprocess.run([own_up.binary, "--json", "session", "show", "pc/s1"], env=remote,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and len(json.loads(r.stdout)["turns"]) == 1, r.stderr
        r = subprocess.run([own_up.binary, "session", "ls"], env=remote, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.splitlines()[0].split()[:2] == ["SESSION", "TENANT"], r
        # A turn for another tenant's session is refused, and the session is unchanged.
        code, _, err = own_up("run", "--session", "pc_s1", str(doc))
        assert code != 0 and "tenant pc's" in err, err
        assert len(own_up.json("session", "show", "pc/s1")["turns"]) == 1
        own_up.ok("session", "rm", "pc/s1")
        assert a("GET", "/v1/sessions")[1]["sessions"] == []
    finally:
        srv.stop()
