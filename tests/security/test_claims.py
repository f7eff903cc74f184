"""Claims of the README's security section that no other test proved (docs/security.md lists
which test proves each one)."""

import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from api_client import Api
from upstream_e2e import Server, unique_name, wait_until


@pytest.fixture(scope="module")
def eup(own_up, lab):
    # Resolves the lab's names, trusts its CA, and opens a private range that covers the boxes' own.
    Path(own_up.home, "config.json").write_text(json.dumps(lab.config(open_private=["10.0.0.0/8"])))
    return own_up


def test_files_keep_box_relative_owners_on_disk(eup):
    _, b = eup.create()
    try:
        eup.ok("box", "exec", "--user", "user", b, "--", "sh", "-c", "echo mine > /home/user/owned")
        box_id = eup.inspect(b)["id"]
        on_disk = Path(eup.home, "pool", "boxes", box_id, "fs", "root", "upper", "home", "user", "owned")
        st = on_disk.lstat()
        # Box-relative (user is 1000), whichever host range the box ran under.
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        eup.ok("box", "stop", b)
        eup.ok("box", "start", b)
        assert eup.ok("box", "exec", b, "--", "stat", "-c", "%U", "/home/user/owned").strip() == "user"
    finally:
        eup.rm(b)


def test_path_races_never_leave_the_box(eup, tmp_path):
    """A box swaps a directory and a symlink to / while files are copied in and out through it."""
    _, b = eup.create()
    marker = Path("/tmp") / unique_name("host-marker")
    try:
        eup.ok("box", "exec", "-d", b, "--", "sh", "-c",
               "mkdir -p /home/user/real; while true; do mv -T /home/user/real /home/user/d 2>/dev/null;"
               " mv -T /home/user/d /home/user/real 2>/dev/null; ln -sfn / /home/user/d; rm -f /home/user/d; done")
        src = tmp_path / "x"
        src.write_text("from the host\n")
        for i in range(40):
            eup("box", "cp", str(src), f"{b}:/home/user/d/tmp/{marker.name}")
            eup("box", "cp", f"{b}:/home/user/d/tmp", str(tmp_path / f"out{i}"))
        # Whatever the box's path pointed at in the moment, it was the box's: nothing was written
        # to the host's /tmp (and what came out landed under the destination only).
        assert not marker.exists()
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("out")) == ["x"]
    finally:
        eup.rm(b)


def private_drops():
    """Packets the table dropped as bound for private, shared, loopback, multicast or reserved
    ranges (set private4), in the global rule and in every box's chain."""
    out = subprocess.run(["nft", "list", "table", "inet", "upstream"], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(m) for m in re.findall(r"ip daddr @private4 .*?counter packets (\d+)", out))


def test_firewall_drops_shared_ranges_and_ipv6(eup, lab):
    # Which ranges set private4 holds is a unit test (Firewall.*, Egress.*); here, that a box's
    # packet to one of them (CGNAT) meets the drop, and that a box has no IPv6 way out.
    _, b = eup.create("--network", "allow-all")
    try:
        before = private_drops()
        eup.ok("box", "exec", b, "--", "python3", "-c",
               "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               "[s.sendto(b'x', ('100.64.0.1', 9)) for _ in range(3)]")
        time.sleep(0.2)
        assert private_drops() - before >= 3
        out = eup.ok("box", "exec", b, "--", "sh", "-c", "ip -6 route show; ip -6 addr show scope global")
        assert "default" not in out and "scope global" not in out, out
        host_if = "upv" + str((eup.inspect(b)["host_uid_base"] - 268435456) // 65536)
        ll = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", host_if, "scope", "link"], capture_output=True,
                            text=True).stdout.split()
        if len(ll) > 3:  # the host end has a link-local address: still nothing gets through to it
            host_ll = ll[3].split("/")[0]
            srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("::", 0))
            srv.listen(4)
            try:
                rc, _, _ = eup("box", "exec", b, "--", "python3", "-c",
                               f"import socket; socket.create_connection(('{host_ll}%eth0', {srv.getsockname()[1]}), 2)")
                assert rc != 0
            finally:
                srv.close()
    finally:
        eup.rm(b)


def test_boxes_own_range_stays_closed_whatever_is_opened(eup, lab):
    _, a = eup.create("--network", "allow-all")
    _, b = eup.create("--network", "allow-all")
    try:
        eup.ok("box", "exec", "-d", b, "--", "python3", "-m", "http.server", "--bind", "0.0.0.0", "8000")
        wait_until(lambda: eup("box", "exec", b, "--", "python3", "-c",
                               "import socket; socket.create_connection(('127.0.0.1', 8000), 1)")[0] == 0,
                   timeout=15, what="the server in box b")
        addr = eup.inspect(b)["address"]
        rc, _, _ = eup("box", "exec", a, "--", "curl", "-sf", "--max-time", "2", f"http://{addr}:8000/")
        assert rc != 0  # 10.0.0.0/8 is open to this installation's boxes, but not boxes' own range
        # The opened range itself works (the lab's private host is in it).
        rc, _, _ = eup("box", "exec", a, "--", "curl", "-sf", "--max-time", "3", lab.url(lab.priv_ip))
        assert rc == 0
    finally:
        eup.rm(a)
        eup.rm(b)


def test_netd_verifies_the_real_server(eup, lab):
    secret = "Bearer upt-badcert-" + os.urandom(4).hex()
    _, b = eup.create("--network", "custom", "--allow-domain", "badcert.test",
                      "--header", f"badcert.test=Authorization: {secret}")
    try:
        rc, out, err = eup("box", "exec", b, "--", "curl", "-sS", "--max-time", "5", "https://badcert.test/headers")
        assert rc != 0 and secret not in out
        wait_until(lambda: any(d["reason"].startswith("TLS to badcert.test failed")
                               for d in json.loads(eup.ok("--json", "box", "traffic", b))["denied"]),
                   timeout=5, what="the refusal in the box's counters")
    finally:
        eup.rm(b)


def test_exposure_credentials_are_kept_as_hashes_only(eup):
    _, b = eup.create("--network", "allow-all")
    try:
        bearer = json.loads(eup.ok("--json", "box", "expose", b, "8000"))
        basic = json.loads(eup.ok("--json", "box", "expose", b, "8001", "--auth", "basic"))
        for secret in (bearer["token"], basic["password"]):
            for where in (eup.home, "/run/upstream"):
                r = subprocess.run(["grep", "-rlF", secret, where], capture_output=True)
                assert r.stdout == b"", (where, r.stdout)
    finally:
        eup.rm(b)


def test_server_wide_tenant_defaults(own_up):
    key = json.loads(own_up.ok("--json", "keys", "create", "--tenant", "defaults"))["key"]
    s = Server(own_up, "--no-access-log", "--max-boxes", "1", "--max-execs", "1")
    api = Api(s.url, key)
    made = []
    try:
        st, box = api("POST", "/v1/boxes", {})
        assert st == 201
        made.append(box["id"])
        st, e = api("POST", "/v1/boxes", {})
        assert st == 429 and "limit of 1 boxes" in e["message"], e
        c, r = api.stream(f"/v1/boxes/{box['id']}/execs", {"shell": "echo go; sleep 1", "stream": True})
        r.readline()
        st, e = api("POST", f"/v1/boxes/{box['id']}/execs", {"cmd": ["true"]})
        assert st == 429, e
        r.read()
        c.close()
    finally:
        for i in made:
            api("DELETE", f"/v1/boxes/{i}?force=true")
        s.stop()


def test_pipelines_run_in_a_process_of_their_own(up):
    s = Server(up, "--no-access-log")
    api = Api(s.url)
    try:
        seen = {}

        def watch():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "pid" not in seen:
                for child in Path(f"/proc/{s.proc.pid}/task").glob("*/children"):
                    for pid in child.read_text().split():
                        try:
                            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                        except OSError:
                            continue
                        if len(argv) > 1 and argv[1] == b"run":
                            seen["pid"] = int(pid)
                time.sleep(0.05)

        t = threading.Thread(target=watch)
        t.start()
        st, r = api("POST", "/v1/pipelines", {"document": "```bash\nsleep 1\necho done\n```\n"})
        t.join()
        assert st == 200 and r["exit_code"] == 0
        assert seen.get("pid") and seen["pid"] != s.proc.pid
    finally:
        s.stop()
