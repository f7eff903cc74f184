"""A tenant's key names no host path: not as an image (create, fork, documents), not through an
imported snapshot's manifest, not through a layer it did not bring; and a tenant stays within its
ceilings. The operator's own imports of files made elsewhere need a base chosen here."""

import io
import json
import subprocess
import tarfile

import pytest

from api_client import Api
from upstream_e2e import Server, unique_name


@pytest.fixture(scope="module")
def keys(own_up):
    out = {}
    for tenant in ("acme", "globex"):
        out[tenant] = json.loads(own_up.ok("--json", "keys", "create", "--tenant", tenant))["key"]
    out["operator"] = json.loads(own_up.ok("--json", "keys", "create", "--operator"))["key"]
    return out


@pytest.fixture(scope="module")
def server(own_up, keys):
    s = Server(own_up, "--no-access-log")
    try:
        yield s
    finally:
        s.stop()


def boxes_of(own_up):
    return {b["id"] for b in own_up.json("box", "ls")}


HOST_NAMES = ["dir:/", "dir:/etc", "tar:/etc/passwd", "dir:/no/such/dir", "tar:/var/lib/upstream/x.tar"]


def test_tenant_cannot_name_host_paths(own_up, server, keys):
    acme = Api(server.url, keys["acme"])
    before = boxes_of(own_up)
    replies = set()
    for image in HOST_NAMES:
        for path, body in [("/v1/boxes", {"image": image}), ("/v1/boxes", {"image": image, "count": 2})]:
            s, e = acme("POST", path, body)
            assert s == 403 and e["code"] == "permission_denied", (image, s, e)
            assert "not available to tenant acme" in e["message"]
            # The same answer whether or not the path exists: no oracle of the host's files.
            replies.add(e["message"].replace(image, "IMAGE"))
    assert len(replies) == 1, replies
    assert boxes_of(own_up) == before
    # The published image (host, by default) works.
    s, b = acme("POST", "/v1/boxes", {"name": unique_name("pub")})
    assert s == 201
    acme("DELETE", f"/v1/boxes/{b['id']}?force=true")


def test_operator_still_names_host_paths(own_up, server, keys):
    op = Api(server.url, keys["operator"])
    rootfs = own_up.home + "/rootfs"
    subprocess.run(["mkdir", "-p", rootfs + "/bin"], check=True)
    subprocess.run(["cp", "/bin/busybox", rootfs + "/bin/busybox"], check=True)
    s, b = op("POST", "/v1/boxes", {"image": "dir:" + rootfs, "name": unique_name("opdir")})
    assert s == 201, b
    op("DELETE", f"/v1/boxes/{b['id']}?force=true")
    acme = Api(server.url, keys["acme"])
    s, e = acme("POST", "/v1/boxes", {"image": "dir:" + rootfs})
    assert s == 403


def test_tenant_document_cannot_name_host_paths(own_up, server, keys):
    acme = Api(server.url, keys["acme"])
    before = boxes_of(own_up)
    for image in ("dir:/", "tar:/etc/passwd"):
        doc = f"---\nimage: {image}\n---\n\n```bash\ncat /etc/shadow\n```\n"
        s, r = acme("POST", "/v1/pipelines", {"document": doc})
        # A refused image is a document error: 400 naming the front-matter line, nothing run.
        assert s == 400 and r["code"] == "invalid_argument", r
        assert "document.md:2:8" in r["message"] and "not available to tenant acme" in r["message"], r
        assert "root:" not in json.dumps(r)
    assert boxes_of(own_up) == before


def _export(api, snap_id):
    s, ctype, blob = api.raw("GET", f"/v1/snapshots/{snap_id}/export")
    assert s == 200
    return subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True).stdout


def _with_manifest(tar_bytes, change):
    """The export with its manifest (the first entry) rewritten; every other byte as it was."""
    t = tarfile.open(fileobj=io.BytesIO(tar_bytes))
    members = t.getmembers()
    manifest = json.loads(t.extractfile(members[0]).read())
    change(manifest)
    out = io.BytesIO()
    w = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)
    data = json.dumps(manifest).encode()
    info = tarfile.TarInfo(members[0].name)
    info.size = len(data)
    info.mtime = members[0].mtime
    w.addfile(info, io.BytesIO(data))
    head = out.getvalue()  # no end-of-archive blocks yet: close() would add them
    rest = tar_bytes[members[1].offset:]
    return subprocess.run(["zstd", "-q", "-c"], input=head + rest, capture_output=True, check=True).stdout


def test_import_cannot_name_host_paths_or_borrow_layers(own_up, server, keys, tmp_path):
    acme = Api(server.url, keys["acme"])
    globex = Api(server.url, keys["globex"])
    made_boxes, made_snaps = [], []
    try:
        s, b = acme("POST", "/v1/boxes", {"name": unique_name("imp")})
        made_boxes.append((acme, b["id"]))
        acme("POST", f"/v1/boxes/{b['id']}/execs", {"shell": "echo mine > /home/user/f"})
        s, snap = acme("POST", f"/v1/boxes/{b['id']}/snapshot", {"name": unique_name("impsnap")})
        assert s == 201
        made_snaps.append((acme, snap["id"]))
        tar_bytes = _export(acme, snap["id"])
        # Another tenant's layer, named by its digest.
        s, gb = globex("POST", "/v1/boxes", {"name": unique_name("other")})
        made_boxes.append((globex, gb["id"]))
        globex("POST", f"/v1/boxes/{gb['id']}/execs", {"shell": "echo secret > /home/user/s"})
        s, gsnap = globex("POST", f"/v1/boxes/{gb['id']}/snapshot", {"name": unique_name("gsnap")})
        made_snaps.append((globex, gsnap["id"]))
        g_digest = own_up.json("snapshot", "inspect", gsnap["id"])["layers"][0]
        snaps_before = {x["id"] for x in own_up.json("snapshot", "ls")}

        def put(api, blob, query=""):
            return api("PUT", "/v1/snapshots/import?name=" + unique_name("in") + query, blob,
                       headers={"Content-Type": "application/zstd"})

        for base in ("dir:/", "tar:/etc/passwd", "dir:/no/such"):
            s, e = put(acme, _with_manifest(tar_bytes, lambda m: m.update(base_image=base)))
            assert s == 403 and "not available to tenant acme" in e["message"], (base, s, e)
            # Naming a base at import is checked the same way.
            s, e = put(acme, _with_manifest(tar_bytes, lambda m: None), "&base=" + base)
            assert s == 403, (base, s, e)
        borrowed = _with_manifest(tar_bytes, lambda m: m["layers"].append({"digest": g_digest, "bytes": 1, "files": 1}))
        s, e = put(acme, borrowed)
        assert s == 400 and "listed but not in the export" in e["message"], e
        assert {x["id"] for x in own_up.json("snapshot", "ls")} == snaps_before
        # The export as it was imports fine.
        s, again = put(acme, _with_manifest(tar_bytes, lambda m: None))
        assert s == 201, again
        made_snaps.append((acme, again["id"]))

        # The operator's CLI: a file from elsewhere whose base is a host path needs --base.
        f = tmp_path / "foreign.tar.zst"
        f.write_bytes(_with_manifest(tar_bytes, lambda m: m.update(base_image="dir:/")))
        code, out, err = own_up("snapshot", "import", str(f), "--name", unique_name("cli"))
        assert code != 0 and "--base" in err and "dir:/" in err, err
        name = unique_name("cli")
        own_up.ok("snapshot", "import", str(f), "--name", name, "--base", "host")
        assert own_up.json("snapshot", "inspect", name)["base_image"] == "host"
        own_up.ok("snapshot", "rm", name)
    finally:
        for api, sid in made_boxes:
            api("DELETE", f"/v1/boxes/{sid}?force=true")
        for api, sid in reversed(made_snaps):
            api("DELETE", f"/v1/snapshots/{sid}")


def test_tenant_ceilings(own_up, server, keys):
    acme = Api(server.url, keys["acme"])
    before = boxes_of(own_up)
    for limits, what in [({"memory": "1t"}, "memory"), ({"disk": "10t"}, "disk"), ({"pids": 4000000}, "pids")]:
        s, e = acme("POST", "/v1/boxes", {"limits": limits})
        assert s == 403 and e["code"] == "permission_denied", (limits, s, e)
        assert f"{what} " in e["message"] and "ceiling" in e["message"], e
    assert boxes_of(own_up) == before
    # The operator is not a tenant: no ceiling but the host's.
    op = Api(server.url, keys["operator"])
    s, b = op("POST", "/v1/boxes", {"limits": {"pids": 100000}})
    assert s == 201, b
    op("DELETE", f"/v1/boxes/{b['id']}?force=true")


def test_tenant_totals(own_up, keys, tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"tenants": {"total": {"memory": "1g"}, "box": {"cpus": 1},
                                           "per_tenant": {"globex": {"total": {"memory": "3g"}}}}}))
    s = Server(own_up, "--no-access-log", env={"UPSTREAM_CONFIG": str(cfg)})
    acme = Api(s.url, keys["acme"])
    globex = Api(s.url, keys["globex"])
    made = []
    try:
        st, b = acme("POST", "/v1/boxes", {"limits": {"memory": "512m"}})
        assert st == 201
        made.append((acme, b["id"]))
        st, e = acme("POST", "/v1/boxes", {"limits": {"memory": "768m"}})
        assert st == 429 and "ceiling of 1.0 GiB" in e["message"], e
        st, e = acme("POST", "/v1/boxes", {"limits": {"memory": "64m", "cpus": 2}})
        assert st == 403 and "cpus 2 is over tenant acme's ceiling of 1 per box" in e["message"], e
        # Another tenant's own ceiling.
        st, b2 = globex("POST", "/v1/boxes", {"limits": {"memory": "2g"}})
        assert st == 201, b2
        made.append((globex, b2["id"]))
        # A stopped box holds no memory; starting it again counts.
        acme("POST", f"/v1/boxes/{b['id']}/stop")
        st, b3 = acme("POST", "/v1/boxes", {"limits": {"memory": "768m"}})
        assert st == 201
        made.append((acme, b3["id"]))
        st, e = acme("POST", f"/v1/boxes/{b['id']}/start")
        assert st == 429 and "memory" in e["message"], e
    finally:
        for api, i in made:
            api("DELETE", f"/v1/boxes/{i}?force=true")
        s.stop()


def test_metrics_are_the_operators(server, keys):
    s, ctype, body = Api(server.url, keys["acme"]).raw("GET", "/metrics")
    assert s == 403 and b"operator key" in body
    s, ctype, body = Api(server.url, keys["operator"]).raw("GET", "/metrics")
    assert s == 200 and b"upstream_boxes" in body


def test_bearer_scheme_is_case_insensitive(server, keys):
    for scheme in ("bearer", "BEARER", "Bearer"):
        s, info = Api(server.url, None)("GET", "/v1/info", headers={"Authorization": f"{scheme} {keys['acme']}"})
        assert s == 200 and info["tenant"] == "acme", (scheme, s, info)
