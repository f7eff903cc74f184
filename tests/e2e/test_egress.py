"""Egress policy (network mode custom) and secrets injected in transit, with real traffic to the
test internet of netlab.py: names resolve through netd's resolver (the lab's DNS server behind it),
TCP 80/443 goes through netd's proxy, which checks the SNI or Host and connects to the name itself;
other ports follow the CIDR rules in the host firewall; headers are added by the proxy, and the
secret never enters the box."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from upstream_e2e import wait_until

SECRET = "Bearer upt-" + "5ecret-" + os.urandom(6).hex()


@pytest.fixture(scope="module")
def eup(own_up, lab):
    """A state directory whose configuration resolves the lab's names and trusts its CA."""
    Path(own_up.home, "config.json").write_text(json.dumps(lab.config()))
    return own_up


def curl(up, box, *args, timeout=3):
    rc, out, err = up("box", "exec", box, "--", "curl", "-sS", "--connect-timeout", str(timeout),
                      "--max-time", str(timeout + 2), *args, timeout=60)
    return rc, out, err


def custom(up, *rules):
    _, b = up.create("--network", "custom", *rules)
    return b


def traffic(up, box):
    return json.loads(up.ok("--json", "box", "traffic", box))


def test_only_allowed_domains_resolve_and_connect(eup, lab):
    b = custom(eup, "--allow-domain", "allowed.upt.test", "--allow-domain", "*.sub.upt.test")
    try:
        out = eup.ok("box", "exec", b, "--", "getent", "hosts", "allowed.upt.test")
        assert out.split()[0] == lab.inet_ip
        for name in ("other.upt.test", "sub.upt.test", "api.upt.test"):
            rc, _, _ = eup("box", "exec", b, "--", "getent", "hosts", name)
            assert rc != 0, name
        assert curl(eup, b, "http://allowed.upt.test/whoami")[:2] == (0, lab.inet_ip + "\n")
        assert curl(eup, b, "http://deep.sub.upt.test/hello.txt")[1] == "hello from the test internet\n"
        # HTTPS passes through untouched (no header for the host): the lab's own certificate.
        eup.ok("box", "cp", lab.ca_cert, f"{b}:/tmp/lab-ca.crt")
        rc, out, err = curl(eup, b, "--cacert", "/tmp/lab-ca.crt", "https://allowed.upt.test/whoami")
        assert (rc, out) == (0, lab.inet_ip + "\n"), err
        # A name that is not allowed gets nowhere, even with its address known.
        rc, out, _ = curl(eup, b, "--resolve", f"other.upt.test:80:{lab.other_ip}", "http://other.upt.test/whoami")
        assert "domain other.upt.test is not allowed" in out
        rc, _, _ = curl(eup, b, "--cacert", "/tmp/lab-ca.crt", "--resolve", f"other.upt.test:443:{lab.other_ip}",
                        "https://other.upt.test/whoami", timeout=2)
        assert rc != 0
        # Other ports: CIDR rules only, and none allows anything here.
        rc, _, _ = curl(eup, b, f"http://{lab.inet_ip}:8080/whoami", timeout=1)
        assert rc != 0
    finally:
        eup.rm(b)


def test_spoofing_names_inside_the_box_gains_nothing(eup, lab):
    b = custom(eup, "--allow-domain", "allowed.upt.test")
    try:
        # /etc/hosts sends the allowed name to another site: the proxy connects to the name as
        # the host resolves it.
        eup.ok("box", "exec", b, "--", "sh", "-c", f"echo '{lab.other_ip} allowed.upt.test' >> /etc/hosts")
        assert eup.ok("box", "exec", b, "--", "getent", "hosts", "allowed.upt.test").split()[0] == lab.other_ip
        assert curl(eup, b, "http://allowed.upt.test/whoami")[1] == lab.inet_ip + "\n"
        # The other way round: an allowed address with a forged Host is refused.
        _, out, _ = curl(eup, b, "-H", "Host: other.upt.test", f"http://{lab.inet_ip}/whoami")
        assert "not allowed" in out
        # A forged resolver inside the box is not asked: all DNS goes to netd.
        rc, out, _ = eup("box", "exec", b, "--", "sh", "-c",
                         f"sed -i '/allowed.upt.test/d' /etc/hosts && echo 'nameserver {lab.other_ip}' > /etc/resolv.conf"
                         " && getent hosts allowed.upt.test")
        assert rc == 0 and out.split()[0] == lab.inet_ip
    finally:
        eup.rm(b)


def test_private_addresses_stay_blocked_whatever_the_policy(eup, lab):
    b = custom(eup, "--allow-domain", "*.upt.test", "--allow-cidr", lab.priv_net, "--allow-cidr", "169.254.0.0/16")
    try:
        # Allowed names that resolve to private or link-local addresses: no address in DNS...
        for name in ("rebind.upt.test", "meta.upt.test"):
            rc, _, _ = eup("box", "exec", b, "--", "getent", "hosts", name)
            assert rc != 0, name
        # ...and the proxy refuses them even when the box supplies the address itself.
        _, out, _ = curl(eup, b, "--resolve", f"rebind.upt.test:80:{lab.inet_ip}", "http://rebind.upt.test/whoami")
        assert "private range 10.0.0.0/8" in out
        # Allowed CIDRs do not open private ranges: only the operator can.
        for ip in (lab.priv_ip, lab.metadata_ip):
            rc, out, _ = curl(eup, b, f"http://{ip}/hello.txt", timeout=1)
            assert "is in the private range" in out, ip  # the proxy's 403
            rc, _, _ = curl(eup, b, f"http://{ip}:8080/hello.txt", timeout=1)
            assert rc != 0, ip  # the firewall
        reasons = [d["reason"] for d in traffic(eup, b)["denied"]]
        assert any("rebind.upt.test resolves to 10.77." in r for r in reasons), reasons
    finally:
        eup.rm(b)


def test_cidr_rules_and_denied_wins(eup, lab):
    net = lab.inet_ip.rsplit(".", 1)[0] + ".0/24"
    b = custom(eup, "--allow-cidr", net, "--deny-cidr", lab.inet_ip)
    try:
        assert curl(eup, b, f"http://{lab.other_ip}:8080/whoami")[1] == lab.other_ip + "\n"
        rc, _, _ = curl(eup, b, f"http://{lab.inet_ip}:8080/whoami", timeout=1)
        assert rc != 0
        # Port 80 goes through the proxy, which applies the same rules to the address.
        assert curl(eup, b, f"http://{lab.other_ip}/whoami")[1] == lab.other_ip + "\n"
        _, out, _ = curl(eup, b, f"http://{lab.inet_ip}/whoami")
        assert "denied CIDR " + lab.inet_ip + "/32" in out
    finally:
        eup.rm(b)


def test_policy_changes_on_a_running_box(eup, lab):
    b = custom(eup, "--allow-domain", "allowed.upt.test")
    try:
        eup.ok("box", "exec", "-d", b, "--", "sleep", "600")
        assert curl(eup, b, "http://allowed.upt.test/whoami")[0] == 0
        eup.ok("box", "network", b, "custom", "--allow-domain", "other.upt.test")
        j = eup.inspect(b)
        assert j["egress"]["allow_domains"] == ["other.upt.test"] and j["state_reason"] == "egress policy changed"
        assert curl(eup, b, "http://other.upt.test/whoami")[1] == lab.other_ip + "\n"
        assert "not allowed" in curl(eup, b, "--resolve", f"allowed.upt.test:80:{lab.inet_ip}",
                                     "http://allowed.upt.test/whoami")[1]
        # CIDR rules change too.
        rc, _, _ = curl(eup, b, f"http://{lab.inet_ip}:8080/whoami", timeout=1)
        assert rc != 0
        eup.ok("box", "network", b, "custom", "--allow-cidr", lab.inet_ip)
        assert curl(eup, b, f"http://{lab.inet_ip}:8080/whoami")[1] == lab.inet_ip + "\n"
        # To allow-all and back: a box in allow-all reaches any public address.
        eup.ok("box", "network", b, "allow-all")
        assert curl(eup, b, f"http://{lab.other_ip}:8080/whoami")[0] == 0
        assert "sleep" in eup.ok("box", "exec", b, "--", "ps", "-e", "-o", "comm=")  # no restart
    finally:
        eup.rm(b)


def test_counters_per_destination_and_denied_attempts(eup, lab):
    b = custom(eup, "--allow-domain", "allowed.upt.test")
    try:
        for _ in range(3):
            assert curl(eup, b, "http://allowed.upt.test/bytes/100000")[0] == 0
        curl(eup, b, "--resolve", f"other.upt.test:80:{lab.other_ip}", "http://other.upt.test/")
        eup("box", "exec", b, "--", "getent", "hosts", "other.upt.test")
        # Refusals are there as soon as the box has been refused: read at once, not polled.
        reasons = {x["reason"] for x in traffic(eup, b)["denied"]}
        assert {"domain other.upt.test is not allowed", "domain other.upt.test is not allowed (DNS)"} <= reasons

        def counted():
            t = traffic(eup, b)
            d = t["destinations"].get("allowed.upt.test:80", {})
            return d.get("requests") == 3 and d.get("bytes_in", 0) >= 300000 and len(t["denied"]) >= 2
        wait_until(counted, timeout=10, what="counters")
        t = traffic(eup, b)
        d = t["destinations"]["allowed.upt.test:80"]
        assert d["connections"] == 3 and d["bytes_out"] > 0
        reasons = {x["reason"] for x in t["denied"]}
        assert "domain other.upt.test is not allowed" in reasons
        assert "domain other.upt.test is not allowed (DNS)" in reasons
        assert t["dns"]["queries"] >= 4 and t["dns"]["refused"] >= 1
        table = eup.ok("box", "traffic", b)
        assert "allowed.upt.test:80" in table and "DENIED" in table
    finally:
        eup.rm(b)


def box_processes(init_pid):
    """Host pids of the processes in the box of `init_pid` (its pid namespace)."""
    ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/ns/pid") == ns:
                    out.append(int(p))
            except OSError:
                pass
    return out


def test_headers_are_added_and_the_secret_never_enters_the_box(eup, lab):
    b = custom(eup, "--allow-domain", "*.upt.test", "--header", f"api.upt.test=Authorization: {SECRET}",
               "--header", "api.upt.test=X-Upstream-Test: 1")
    try:
        eup.ok("box", "exec", "-d", b, "--", "sleep", "600")
        # The request reaches the server with the headers; the box trusts the CA of the proxy
        # through the system bundle (curl) and the variables (Python).
        rc, out, err = curl(eup, b, "https://api.upt.test/headers")
        assert rc == 0, err
        got = json.loads(out)
        assert got["authorization"] == SECRET and got["x-upstream-test"] == "1"
        py = ("import json, urllib.request; "
              "print(json.load(urllib.request.urlopen('https://api.upt.test/headers', timeout=5))['authorization'])")
        assert eup.ok("box", "exec", b, "--", "python3", "-c", py).strip() == SECRET
        env = eup.ok("box", "exec", b, "--", "env")
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"):
            assert var + "=" in env
        # Hosts without headers are not intercepted: the lab's own certificate, end to end.
        eup.ok("box", "cp", lab.ca_cert, f"{b}:/tmp/lab-ca.crt")
        rc, out, _ = curl(eup, b, "--cacert", "/tmp/lab-ca.crt", "https://allowed.upt.test/headers")
        assert rc == 0 and "authorization" not in json.loads(out)
        # Plain HTTP is never given the secret.
        assert "authorization" not in json.loads(curl(eup, b, "http://api.upt.test/headers")[1])
        # What fronts show of the box: header names, never values.
        j = eup.inspect(b)
        assert j["egress"]["headers"] == {"api.upt.test": ["Authorization", "X-Upstream-Test"]}
        assert SECRET not in json.dumps(j)
        # The whole filesystem of the box, as its processes see it, and every process's
        # environment and command line: searched from the host, so the search is not itself in
        # the box.
        init = j["init_pid"]
        # The installation's CA key too (a line of its PEM body): the box has the certificate only.
        key_lines = Path(eup.home, "ca", "ca.key").read_text().splitlines()
        key_line = max((x for x in key_lines if not x.startswith("-----")), key=len)
        r = subprocess.run(["grep", "-rlsF", "-I", "--devices=skip", "--exclude-dir=proc", "--exclude-dir=sys",
                            "--exclude-dir=dev", "-e", SECRET, "-e", key_line, f"/proc/{init}/root/"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 1 and r.stdout == "", r.stdout
        pids = box_processes(init)
        assert len(pids) >= 2  # the init and the sleep at least
        for pid in pids:
            for f in ("environ", "cmdline"):
                try:
                    data = Path(f"/proc/{pid}/{f}").read_bytes()
                except OSError:
                    continue
                assert SECRET.encode() not in data, (pid, f)
        # And the box's own view of /proc (what a process inside can read).
        rc, out, _ = eup("box", "exec", b, "--", "sh", "-c",
                         "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c 'upt-5ecre[t]'")
        assert out.strip() == "0"
    finally:
        eup.rm(b)


def test_nothing_is_left_behind(eup, lab):
    b = custom(eup, "--allow-domain", "allowed.upt.test", "--allow-cidr", lab.inet_ip)
    addr = eup.inspect(b)["address"]
    slot = (eup.inspect(b)["host_uid_base"] - 268435456) // 65536
    policy = Path(f"/run/upstream/net/{slot}.json")
    assert policy.exists() and addr in subprocess.run(["nft", "list", "map", "inet", "upstream", "egress"],
                                                     capture_output=True, text=True).stdout
    eup.rm(b)
    assert not policy.exists()
    out = subprocess.run(["nft", "list", "table", "inet", "upstream"], capture_output=True, text=True).stdout
    assert addr not in out and f"chain s{slot} " not in out
    # After a kill -9 of the box's init, the next networked box's start clears what it left.
    b = custom(eup, "--allow-domain", "allowed.upt.test")
    try:
        j = eup.inspect(b)
        os.kill(j["init_pid"], 9)
        slot = (j["host_uid_base"] - 268435456) // 65536
        wait_until(lambda: eup.inspect(b)["state"] == "stopped", timeout=10, what="box stopped")
        assert not Path(f"/run/upstream/net/{slot}.json").exists()
        out = subprocess.run(["nft", "list", "table", "inet", "upstream"], capture_output=True, text=True).stdout
        assert j["address"] not in out
    finally:
        eup.rm(b)


@pytest.mark.parametrize("args,message", [
    (["--network", "custom", "--allow-cidr", "10.0.0.0/33"], "invalid allowed CIDR '10.0.0.0/33'"),
    (["--network", "custom", "--deny-cidr", "example"], "invalid denied CIDR 'example'"),
    (["--network", "custom", "--allow-domain", "exa mple.com"], "invalid allowed domain 'exa mple.com'"),
    (["--network", "custom", "--allow-domain", "*.com"], "a wildcard over a TLD"),
    (["--network", "custom", "--allow-domain", "1.2.3.4"], "put addresses in the allowed CIDRs"),
    (["--network", "allow-all", "--allow-domain", "example.com"], "apply to network mode custom"),
    (["--network", "custom", "--header", "api.example.com=Bad Name: x"], "invalid header name 'Bad Name'"),
    (["--network", "custom", "--header", "api.example.com=Host: x"], "cannot be injected"),
    (["--network", "custom", "--header", "no-separator"], "invalid --header 'no-separator'"),
    (["--header", "api.example.com=Authorization: x"], "headers need a network"),
])
def test_bad_egress_input(up, args, message):
    before = up.ok("box", "ls", "-q")
    rc, out, err = up("box", "create", *args)
    assert rc != 0 and message in err, err
    assert up.ok("box", "ls", "-q") == before


def test_bad_policy_change_changes_nothing(up):
    _, b = up.create("--network", "custom", "--allow-domain", "example.com")
    try:
        rc, _, err = up("box", "network", b, "custom", "--allow-cidr", "300.1.1.1")
        assert rc != 0 and "invalid allowed CIDR '300.1.1.1'" in err
        assert up.inspect(b)["egress"]["allow_domains"] == ["example.com"]
    finally:
        up.rm(b)


def test_policy_edits_add_and_remove_and_a_replacement_says_what_it_dropped(eup, lab):
    b = custom(eup, "--allow-domain", "allowed.upt.test")
    try:
        eup.ok("box", "network", b, "--add-domain", "other.upt.test", "--add-cidr", lab.inet_ip)
        g = eup.inspect(b)["egress"]
        assert g["allow_domains"] == ["allowed.upt.test", "other.upt.test"], g
        assert g["allow_cidrs"] == [lab.inet_ip + "/32"], g
        assert curl(eup, b, "http://other.upt.test/whoami")[1] == lab.other_ip + "\n"
        assert curl(eup, b, f"http://{lab.inet_ip}:8080/whoami")[1] == lab.inet_ip + "\n"
        eup.ok("box", "network", b, "--rm-domain", "allowed.upt.test", "--rm-cidr", lab.inet_ip)
        assert eup.inspect(b)["egress"]["allow_domains"] == ["other.upt.test"]
        assert eup.inspect(b)["egress"]["allow_cidrs"] == []
        assert "not allowed" in curl(eup, b, "--resolve", f"allowed.upt.test:80:{lab.inet_ip}",
                                     "http://allowed.upt.test/whoami")[1]
        # Removing what is not there, or editing a box that is not custom, is refused by name.
        before = eup.inspect(b)["egress"]
        rc, _, err = eup("box", "network", b, "--rm-domain", "nope.upt.test")
        assert rc == 1 and "does not allow the domain 'nope.upt.test' (it allows other.upt.test)" in err, err
        rc, _, err = eup("box", "network", b, "--add-domain", "x.upt.test", "--allow-domain", "y.upt.test")
        assert rc == 1 and "use one or the other" in err, err
        rc, _, err = eup("box", "network", b, "allow-all", "--add-domain", "x.upt.test")
        assert rc == 1 and "edit a custom network's policy" in err, err
        assert eup.inspect(b)["egress"] == before
        # A replacement names what the box no longer allows.
        rc, _, err = eup("box", "network", b, "custom", "--allow-domain", "allowed.upt.test")
        assert rc == 0 and "no longer allows other.upt.test" in err, err
    finally:
        eup.rm(b)


def test_network_daemon_killed_comes_back(eup, lab):
    b = custom(eup, "--allow-domain", "allowed.upt.test")
    try:
        assert curl(eup, b, "http://allowed.upt.test/whoami")[0] == 0
        pid = json.loads(Path("/run/upstream/net/netd.json").read_text())["pid"]
        os.kill(pid, 9)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(),
                   timeout=10, what="netd to die")
        # The next exec in a box with a network starts it again, with the box's policy in force.
        rc, out, err = curl(eup, b, "http://allowed.upt.test/whoami")
        assert out == lab.inet_ip + "\n", err
        assert "not allowed" in curl(eup, b, "--resolve", f"other.upt.test:80:{lab.other_ip}",
                                     "http://other.upt.test/whoami")[1]
        assert json.loads(Path("/run/upstream/net/netd.json").read_text())["pid"] != pid
    finally:
        eup.rm(b)


def test_the_server_brings_the_network_daemon_back(eup, lab):
    from upstream_e2e import Server
    b = custom(eup, "--allow-domain", "allowed.upt.test")
    server = Server(eup, "--no-access-log")
    try:
        pid = json.loads(Path("/run/upstream/net/netd.json").read_text())["pid"]
        os.kill(pid, 9)

        def back():
            try:
                j = json.loads(Path("/run/upstream/net/netd.json").read_text())
            except (OSError, ValueError):
                return False
            return j["pid"] != pid and Path(f"/proc/{j['pid']}").exists()
        # No command touches the box meanwhile: `upstream serve` notices within a few seconds.
        wait_until(back, timeout=15, what="netd restarted by the server")
        assert curl(eup, b, "http://allowed.upt.test/whoami")[1] == lab.inet_ip + "\n"
    finally:
        server.stop()
        eup.rm(b)
