"""The TypeScript/JavaScript SDK: its node:test suite against a real server, and the package that
`npm pack` makes, installed into a fresh project and used from there."""

import json
import os
import shutil
import subprocess

import pytest

from checking_proxy import CheckingProxy
from upstream_e2e import REPO, Server

JS = REPO / "sdk" / "js"


@pytest.fixture(scope="module")
def server(up):
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.fail("node and npm are needed (scripts/setup.sh installs them)")
    s = Server(up, "--no-access-log")
    try:
        yield s
    finally:
        s.stop()


def node_env(server):
    return dict(os.environ, UPSTREAM_URL=server.url, NO_COLOR="1", npm_config_update_notifier="false")


def test_node_suite(server):
    # Through a relay that checks every request the SDK sends against the OpenAPI document.
    relay = CheckingProxy(server.url)
    try:
        r = subprocess.run(["node", "--test", "test/"], cwd=JS, env=node_env(relay), capture_output=True,
                           text=True, timeout=300)
    finally:
        relay.close()
    assert relay.requests > 50, relay.requests
    assert not relay.violations, "\n".join(relay.violations[:20])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "# fail 0" in r.stdout and "# pass 14" in r.stdout, r.stdout[-2000:]


def test_npm_pack_installs_and_runs(server, tmp_path):
    r = subprocess.run(["npm", "pack", "--json", "--pack-destination", str(tmp_path)], cwd=JS, env=node_env(server),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)[0]
    files = {f["path"] for f in info["files"]}
    assert {"package.json", "src/index.js", "src/index.d.ts", "README.md"} <= files
    assert not any(f.startswith("test/") for f in files)
    tgz = tmp_path / info["filename"]
    proj = tmp_path / "app"
    proj.mkdir()
    (proj / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0", "type": "module"}))
    r = subprocess.run(["npm", "install", "--offline", "--no-audit", "--no-fund", str(tgz)], cwd=proj,
                       env=node_env(server), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (proj / "main.js").write_text(
        'import { Sandbox } from "@upstream/sdk";\n'
        "const sb = await Sandbox.create();\n"
        "try {\n"
        '  const r = await sb.exec("echo $((6*7))");\n'
        "  console.log(JSON.stringify({ out: r.stdout, code: r.exitCode }));\n"
        "} finally { await sb.delete(); }\n")
    r = subprocess.run(["node", "main.js"], cwd=proj, env=node_env(server), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"out": "42\n", "code": 0}
