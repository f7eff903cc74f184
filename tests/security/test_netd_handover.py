"""One netd serves every installation on the host: a second installation of an older build uses
the one that runs instead of killing it, and a newer netd takes over once, by a hand-over during
which no DNS query and no proxied connection of any box fails."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from upstream_e2e import Upstream

NETD_JSON = Path("/run/upstream/net/netd.json")

LOOP = r"""
import socket, struct, sys, time, random
rounds, fails, http_fails = int(sys.argv[1]), 0, 0
def query(name):
    q = struct.pack('!HHHHHH', random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
    for label in name.split('.'):
        q += bytes([len(label)]) + label.encode()
    q += b'\0' + struct.pack('!HH', 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(q, ('10.0.0.53', 53))
    r = s.recv(4096)
    return struct.unpack('!H', r[6:8])[0]
for i in range(rounds):
    try:
        if query('allowed.upt.test') != 1:
            fails += 1
    except OSError:
        fails += 1
    try:
        c = socket.create_connection(('allowed.upt.test', 80), 2)
        c.sendall(b'GET /hello.txt HTTP/1.1\r\nHost: allowed.upt.test\r\nConnection: close\r\n\r\n')
        c.settimeout(2)
        if not c.recv(100).startswith(b'HTTP/1.1 200'):
            http_fails += 1
        c.close()
    except OSError:
        http_fails += 1
    time.sleep(0.02)
print(fails, http_fails)
"""


def netd_pid():
    return json.loads(NETD_JSON.read_text())["pid"]


@pytest.fixture(scope="module")
def eup(own_up, lab):
    Path(own_up.home, "config.json").write_text(json.dumps(lab.config()))
    return own_up


def test_another_build_uses_the_running_netd(eup, lab):
    d = Path(tempfile.mkdtemp(prefix="upstream-sec-build-", dir="/tmp"))
    copy = d / "upstream"
    shutil.copy(eup.binary, copy)  # another file: another build, as netd tells builds apart
    os.utime(copy, (1_600_000_000, 1_600_000_000))  # an older one
    other = Upstream(copy, d / "home")
    (d / "home").mkdir()
    made = []
    try:
        _, a = eup.create("--network", "allow-all")
        made.append((eup, a))
        first = netd_pid()
        for _ in range(3):
            _, b = other.create("--network", "allow-all")
            made.append((other, b))
            assert netd_pid() == first
            eup.ok("box", "exec", a, "--", "true")
            assert netd_pid() == first
    finally:
        for u, x in made:
            u.rm(x)
        sys.modules["e2e_conftest"]._teardown(other)
        shutil.rmtree(d, ignore_errors=True)


def test_newer_netd_takes_over_without_a_gap(eup, lab):
    _, b = eup.create("--network", "custom", "--allow-domain", "allowed.upt.test")
    try:
        eup.ok("box", "exec", b, "--", "python3", "-c", f"open('/tmp/loop.py','w').write({LOOP!r})")
        eup.ok("box", "exec", b, "--", "true")
        old = netd_pid()
        result = {}

        def loop():
            result["out"] = eup.ok("box", "exec", b, "--", "python3", "/tmp/loop.py", "150", timeout=120)

        t = threading.Thread(target=loop)
        t.start()
        import time
        time.sleep(1.0)
        # A process of a newer netd protocol needs netd: it takes over.
        protocol = json.loads(NETD_JSON.read_text())["protocol"] + 1
        newer = dict(eup.env, UPSTREAM_NETD_PROTOCOL=str(protocol))
        subprocess.run([eup.binary, "box", "exec", b, "--", "true"], env=newer, check=True,
                       capture_output=True, timeout=60)
        new = netd_pid()
        assert new != old
        t.join(120)
        dns_fails, http_fails = map(int, result["out"].split())
        assert (dns_fails, http_fails) == (0, 0), result["out"]
        assert json.loads(NETD_JSON.read_text())["protocol"] == protocol
        # The predecessor finished what it served and left.
        deadline = time.monotonic() + 30
        while Path(f"/proc/{old}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{old}").exists()
        # It handed its resolver's socket over and retired; it did not die on the way.
        log = (NETD_JSON.parent / "netd.log").read_text()
        assert f"netd[{old}] info: handed over to a newer netd" in log, log[-2000:]
        assert f"netd[{new}] info: took over from netd {old}" in log, log[-2000:]
        # And this build, older now, uses the newer one rather than replacing it.
        eup.ok("box", "exec", b, "--", "true")
        assert netd_pid() == new
    finally:
        eup.rm(b)
