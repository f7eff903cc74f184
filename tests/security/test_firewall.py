"""The host firewall never lets a box's packet through that its policy refuses: not while the
table is being rebuilt (one transaction with every box's rules), not with a forged source address
(a box's packets come from its own interface and address only), and two installations with
different configurations share the table without rebuilding it back and forth."""

import json
import re
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from pathlib import Path

from upstream_e2e import Upstream, unique_name

PROBE = r"""
import socket, sys, time
blocked, allowed, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
through = ok = 0
deadline = time.monotonic() + 60
for i in range(rounds):
    if time.monotonic() > deadline:
        break
    for host, counter in ((blocked, "through"), (allowed, "ok")):
        s = socket.socket()
        s.settimeout(0.1)
        try:
            s.connect((host, 8080))
            if counter == "through":
                through += 1
            else:
                ok += 1
        except OSError:
            pass
        finally:
            s.close()
print(through, ok)
"""


def guard_drops():
    out = subprocess.run(["nft", "list", "chain", "inet", "upstream", "guard"], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def table_handle():
    out = subprocess.run(["nft", "-a", "list", "table", "inet", "upstream"], capture_output=True, text=True,
                         check=True).stdout
    return re.search(r"table inet upstream \{ # handle (\d+)", out).group(1)


def test_rebuilds_under_load_let_nothing_through(up, lab):
    allowed, blocked = lab.inet_ip, lab.other_ip
    _, b = up.create("--network", "custom", "--allow-cidr", f"{allowed}/32")
    try:
        up.ok("box", "exec", b, "--", "python3", "-c", "open('/tmp/probe.py','w').write(%r)" % PROBE)
        result = {}

        def probe():
            result["out"] = up.ok("box", "exec", b, "--", "python3", "/tmp/probe.py", blocked, allowed, "150",
                                  timeout=120)

        t = threading.Thread(target=probe)
        t.start()
        rebuilds = 0
        deadline = time.monotonic() + 60
        while t.is_alive() and rebuilds < 200 and time.monotonic() < deadline:
            up.ok("system", "rebuild-firewall")
            rebuilds += 1
        t.join(120)
        through, ok = map(int, result["out"].split())
        assert rebuilds >= 10, rebuilds
        assert through == 0, f"{through} connections to a refused address during {rebuilds} rebuilds"
        assert ok > 100, f"only {ok} of 150 connections to the allowed address"
    finally:
        up.rm(b)


def test_forged_source_addresses_are_dropped(up, lab):
    _, a = up.create("--network", "allow-all")
    _, other = up.create("--network", "allow-all")
    try:
        pid = up.inspect(a)["init_pid"]
        other_ip = up.inspect(other)["address"]
        # Host root inside the box's network namespace (what box root cannot do: it has no raw
        # sockets there) sends UDP datagrams with forged sources, then one with its own.
        send = r"""
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def packet(src, dst):
    udp = struct.pack("!HHHH", 40000, 9, 8 + 4, 0) + b"ping"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + udp
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for src in sys.argv[2:]:
    s.sendto(packet(src, sys.argv[1]), (sys.argv[1], 0))
"""
        own = up.inspect(a)["address"]
        net = own.rsplit(".", 1)[0]
        last = int(own.rsplit(".", 1)[1])
        forged = [other_ip, "8.8.8.8", f"{net}.{last + 1}", f"{net}.{last - 1}", lab.inet_ip]
        before = guard_drops()
        subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "/usr/bin/python3", "-c", send, lab.inet_ip, *forged],
                       check=True, timeout=30)
        time.sleep(0.2)
        assert guard_drops() - before == len(forged)
        subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "/usr/bin/python3", "-c", send, lab.inet_ip, own],
                       check=True, timeout=30)
        time.sleep(0.2)
        assert guard_drops() - before == len(forged)  # its own address passes
    finally:
        up.rm(a)
        up.rm(other)


def test_two_installations_share_the_table(up, lab):
    # A second installation that opens a private range: its boxes reach it, the first one's
    # do not, and neither installation's boxes make the other rebuild the table.
    home = Path(tempfile.mkdtemp(prefix="upstream-sec-second-", dir="/tmp"))
    second = Upstream(up.binary, home)
    cfg = home / "config.json"
    cfg.write_text(json.dumps({"network": {"open_private": [lab.priv_net]}}))
    second.env["UPSTREAM_CONFIG"] = str(cfg)
    made = []
    try:
        _, a = up.create("--network", "allow-all")
        made.append((up, a))
        _, b = second.create("--network", "allow-all")
        made.append((second, b))
        handle = table_handle()
        url = lab.url(lab.priv_ip)

        def fetch(u, box):
            return u("box", "exec", box, "--", "curl", "-sf", "--max-time", "2", url, timeout=60)[0]

        for _ in range(3):
            assert fetch(second, b) == 0
            assert fetch(up, a) != 0
            _, c = up.create("--network", "allow-all")
            made.append((up, c))
            _, d = second.create("--network", "allow-all")
            made.append((second, d))
        assert table_handle() == handle  # the same table: never rebuilt
    finally:
        for u, x in made:
            u.rm(x)
        sys.modules["e2e_conftest"]._teardown(second)
