"""Box networks: `--network allow-all` gives a box its own namespace, veth pair and address, with
NAT to the host's uplink; private ranges, link-local (metadata) addresses, the host itself and
other boxes stay unreachable unless the operator opens a range. Real traffic, to test hosts in
network namespaces of our own only (see netlab.py)."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from upstream_e2e import unique_name, wait_until


def fetch(up, box, url, timeout=3):
    """(exit code, body) of an HTTP GET from inside the box."""
    rc, out, err = up("box", "exec", box, "--", "curl", "-sS", "--connect-timeout", str(timeout),
                      "--max-time", str(timeout + 1), url, timeout=60)
    return rc, out


def interface_exists(name):
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def host_if(up, box):
    return "upv" + str((up.inspect(box)["host_uid_base"] - 268435456) // 65536)


def test_allow_all_reaches_the_internet_and_nothing_private(up, lab):
    _, b = up.create("--network", "allow-all")
    try:
        j = up.inspect(b)
        assert j["network"] == "allow-all" and j["address"].split(".")[:2] in (["10", "200"], ["10", "201"], ["10", "202"], ["10", "203"])
        assert fetch(up, b, lab.url(lab.inet_ip, 8080)) == (0, "hello from the test internet\n")
        # The box sees its own address on eth0, behind the host's NAT.
        assert j["address"] in up.ok("box", "exec", b, "--", "ip", "-4", "addr", "show", "eth0")
        # Private ranges and link-local (metadata) addresses: dropped, though the host reaches them.
        for ip in (lab.priv_ip, lab.metadata_ip):
            assert subprocess.run(["curl", "-sf", "--max-time", "3", lab.url(ip)]).returncode == 0
            rc, _ = fetch(up, b, lab.url(ip), timeout=1)
            assert rc != 0, ip
        # The host itself: neither its address on the box's link nor its other addresses.
        gw = ".".join(j["address"].split(".")[:3] + [str(int(j["address"].split(".")[3]) - 1)])
        for ip in (gw, lab.inet_gw):
            rc, _ = fetch(up, b, f"http://{ip}:{serve_port}/", timeout=1)
            assert rc != 0, ip
        # Box root cannot change its network (the namespace is not its own to configure).
        rc, _, err = up("box", "exec", b, "--", "ip", "addr", "add", "10.9.9.9/32", "dev", "eth0")
        assert rc != 0
    finally:
        up.rm(b)


serve_port = 18931


@pytest.fixture(scope="module", autouse=True)
def host_server():
    """A server on every address of the host, which boxes must not reach."""
    p = subprocess.Popen(["/usr/bin/python3", "-m", "http.server", str(serve_port), "--bind", "0.0.0.0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["curl", "-sf", "--max-time", "1", f"http://127.0.0.1:{serve_port}/"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "host server did not start"
            time.sleep(0.1)
        yield
    finally:
        p.kill()
        p.wait(10)


def test_no_network_is_loopback_only(up, lab):
    _, b = up.create()
    try:
        assert "address" not in up.inspect(b)
        rc, _ = fetch(up, b, lab.url(lab.inet_ip, 8080), timeout=1)
        assert rc != 0
        assert "eth0" not in up.ok("box", "exec", b, "--", "ip", "-o", "link")
    finally:
        up.rm(b)


def test_boxes_cannot_reach_each_other(up, lab):
    _, a = up.create("--network", "allow-all")
    _, b = up.create("--network", "allow-all")
    try:
        up.ok("box", "exec", "-d", a, "--", "python3", "-m", "http.server", "8000", "--bind", "0.0.0.0")
        addr = up.inspect(a)["address"]
        wait_until(lambda: up("box", "exec", a, "--", "curl", "-sf", "--max-time", "1",
                              "http://127.0.0.1:8000/")[0] == 0, timeout=15, what="server in box a")
        rc, _ = fetch(up, b, f"http://{addr}:8000/", timeout=1)
        assert rc != 0
        # Both still reach the internet; the host itself reaches into a box (as exposed ports will).
        assert fetch(up, b, lab.url(lab.inet_ip, 8080))[0] == 0
        assert subprocess.run(["curl", "-sf", "--max-time", "2", f"http://{addr}:8000/"],
                              capture_output=True).returncode == 0
        # Nothing from elsewhere is forwarded into a box: the test internet host cannot reach it.
        rc = subprocess.run(["ip", "netns", "exec", lab.hosts[0][0], "curl", "-sf", "--max-time", "2",
                             f"http://{addr}:8000/"], capture_output=True).returncode
        assert rc != 0
    finally:
        up.rm(a)
        up.rm(b)


def test_operator_opens_a_private_range(own_up, lab):
    cfg = Path(own_up.home, "config.json")
    cfg.write_text(json.dumps({"network": {"open_private": [lab.priv_net]}}))
    try:
        _, b = own_up.create("--network", "allow-all")
        try:
            assert fetch(own_up, b, lab.url(lab.priv_ip)) == (0, "hello from the test internet\n")
            rc, _ = fetch(own_up, b, lab.url(lab.metadata_ip), timeout=1)  # only that range
            assert rc != 0
        finally:
            own_up.rm(b)
    finally:
        cfg.unlink()
    # The next networked box's start puts the firewall back as configured (nothing open).
    _, b = own_up.create("--network", "allow-all")
    try:
        rc, _ = fetch(own_up, b, lab.url(lab.priv_ip), timeout=1)
        assert rc != 0
    finally:
        own_up.rm(b)


def test_nothing_is_left_behind(up, lab):
    _, b = up.create("--network", "allow-all")
    name = host_if(up, b)
    assert interface_exists(name)
    up.rm(b)
    wait_until(lambda: not interface_exists(name), timeout=10, what=f"{name} to go")
    # A box whose init is killed takes its interface with it; the next command notices the box
    # stopped, and a restart gives it a network again.
    _, b = up.create("--network", "allow-all")
    try:
        name = host_if(up, b)
        os.kill(up.inspect(b)["init_pid"], 9)
        wait_until(lambda: not interface_exists(name), timeout=10, what=f"{name} to go after kill -9")
        wait_until(lambda: up.inspect(b)["state"] == "stopped", timeout=10, what="box stopped")
        up.ok("box", "start", b)
        assert fetch(up, b, lab.url(lab.inet_ip, 8080))[0] == 0
    finally:
        up.rm(b)


def test_network_changes_on_a_running_box(up, lab):
    _, b = up.create()
    try:
        up.ok("box", "exec", "-d", b, "--", "sleep", "600")
        assert fetch(up, b, lab.url(lab.inet_ip, 8080), timeout=1)[0] != 0
        up.ok("box", "network", b, "allow-all")
        j = up.inspect(b)
        assert j["network"] == "allow-all" and j["state_reason"] == "network set to allow-all"
        assert fetch(up, b, lab.url(lab.inet_ip, 8080)) == (0, "hello from the test internet\n")
        name = host_if(up, b)
        up.ok("box", "network", b, "none")
        assert not interface_exists(name)
        assert fetch(up, b, lab.url(lab.inet_ip, 8080), timeout=1)[0] != 0
        assert "sleep" in up.ok("box", "exec", b, "--", "ps", "-e", "-o", "comm=")  # no restart
        # A stopped box keeps the mode for its next start.
        up.ok("box", "stop", b)
        up.ok("box", "network", b, "allow-all")
        up.ok("box", "start", b)
        assert fetch(up, b, lab.url(lab.inet_ip, 8080))[0] == 0
        rc, _, err = up("box", "network", b, "bridge")
        assert rc != 0 and "invalid network mode 'bridge'" in err
        assert up.inspect(b)["network"] == "allow-all"
    finally:
        up.rm(b)


@pytest.mark.parametrize("mode,message", [
    ("bridge", "invalid network mode 'bridge'"),
    ("Allow-All", "invalid network mode 'Allow-All'"),
])
def test_bad_network_modes(up, mode, message):
    before = up.ok("box", "ls", "-q")
    rc, out, err = up("box", "create", "--network", mode)
    assert rc != 0 and message in err, err
    assert up.ok("box", "ls", "-q") == before


@pytest.mark.parametrize("value,message", [
    ('"10.0.0.0/8"', "network.open_private must be a list"),
    ('["10.0.0.0/33"]', "network.open_private[0]"),
    ('["not-an-ip"]', "not an IPv4 address"),
])
def test_bad_network_configuration(up, tmp_path, value, message):
    check_bad_network_configuration(up, tmp_path, '{"network": {"open_private": ' + value + '}}', message)


@pytest.mark.parametrize("network,message", [
    ('{"resolvers": "192.0.2.53"}', "network.resolvers must be a list"),
    ('{"resolvers": ["10.0.0.300"]}', "network.resolvers[0] must be an IPv4 address"),
    ('{"resolvers": ["192.0.2.53:0"]}', "network.resolvers[0] must be an IPv4 address"),
    ('{"trust_ca": "relative.pem"}', "network.trust_ca must be the absolute path"),
    ('{"trust_ca": "/nonexistent/ca.pem"}', "network.trust_ca: cannot read /nonexistent/ca.pem"),
    ('{"expose_address": "localhost"}', "network.expose_address must be an IPv4 address"),
    ('{"proxy": 1}', "unknown field 'network.proxy'"),
])
def test_bad_egress_configuration(up, tmp_path, network, message):
    check_bad_network_configuration(up, tmp_path, '{"network": ' + network + '}', message)


def check_bad_network_configuration(up, tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    before = up.ok("box", "ls", "-q")
    up.env["UPSTREAM_CONFIG"] = str(path)
    try:
        rc, out, err = up("box", "create", "--network", "allow-all")
    finally:
        del up.env["UPSTREAM_CONFIG"]
    assert rc != 0 and message in err, err
    assert up.ok("box", "ls", "-q") == before
