"""netd judges every request, not only a connection's first bytes: secret headers go only to
requests for the host they are for (no domain fronting, no TRACE echo), a plain-HTTP connection
cannot switch to another name, an exposed port authenticates and strips every request on a
kept-alive connection, and no DNS answer of any type hands a box a private address."""

import json
import os
import socket
import struct
from pathlib import Path

import pytest

from upstream_e2e import wait_until

SECRET = "Bearer upt-" + "fronting-" + os.urandom(6).hex()
E2E = Path(__file__).resolve().parents[1] / "e2e"


@pytest.fixture(scope="module")
def eup(own_up, lab):
    Path(own_up.home, "config.json").write_text(json.dumps(lab.config()))
    return own_up


def curl(up, box, *args):
    return up("box", "exec", box, "--", "curl", "-sS", "--connect-timeout", "3", "--max-time", "5",
              "-w", "\n%{http_code}", *args, timeout=60)


def test_headers_follow_the_request_not_the_tls_name(eup, lab):
    _, b = eup.create("--network", "custom", "--allow-domain", "api.upt.test", "--allow-domain", "other.upt.test",
                      "--header", f"api.upt.test=Authorization: {SECRET}")
    try:
        rc, out, err = curl(eup, b, "https://api.upt.test/headers")
        body, code = out.rsplit("\n", 1)
        assert code == "200" and json.loads(body)["authorization"] == SECRET, (out, err)
        # The allowed TLS name, another Host inside: refused, the secret sent nowhere.
        for args in (["-H", "Host: other.upt.test", "https://api.upt.test/headers"],
                     ["--request-target", "https://other.upt.test/headers", "https://api.upt.test/"],
                     ["-H", "Host: evil.example", "https://api.upt.test/headers"]):
            rc, out, err = curl(eup, b, *args)
            assert out.endswith("\n421") and SECRET not in out, (args, out, err)
        # TRACE would echo the added header back into the box.
        rc, out, err = curl(eup, b, "-X", "TRACE", "https://api.upt.test/headers")
        assert out.endswith("\n405") and SECRET not in out, (out, err)
        # Counted (netd writes its counters every 250 ms).
        wait_until(lambda: any("a request for other.upt.test" in d["reason"]
                               for d in json.loads(eup.ok("--json", "box", "traffic", b))["denied"]),
                   timeout=5, what="the refusal in the box's counters")
    finally:
        eup.rm(b)


def test_plain_http_cannot_switch_hosts(eup, lab):
    _, b = eup.create("--network", "custom", "--allow-domain", "allowed.upt.test")
    try:
        script = (
            "import socket\n"
            "s = socket.create_connection(('allowed.upt.test', 80), 5)\n"
            "s.sendall(b'GET /whoami HTTP/1.1\\r\\nHost: allowed.upt.test\\r\\n\\r\\n'\n"
            "          b'GET /whoami HTTP/1.1\\r\\nHost: other.upt.test\\r\\n\\r\\n')\n"
            "s.settimeout(5)\n"
            "data = b''\n"
            "while True:\n"
            "    try:\n"
            "        d = s.recv(65536)\n"
            "    except socket.timeout:\n"
            "        break\n"
            "    if not d:\n"
            "        break\n"
            "    data += d\n"
            "print(data.decode())\n")
        out = eup.ok("box", "exec", b, "--", "python3", "-c", script, timeout=60)
        assert out.count("HTTP/1.1 200") == 1 and "HTTP/1.1 403" in out, out
        assert lab.other_ip not in out
    finally:
        eup.rm(b)


def test_exposed_port_authenticates_every_request(eup):
    _, b = eup.create("--network", "allow-all")
    try:
        eup.ok("box", "cp", str(E2E / "boxserver.py"), f"{b}:/tmp/boxserver.py")
        eup.ok("box", "exec", "-d", b, "--", "python3", "/tmp/boxserver.py", "8000")
        wait_until(lambda: eup("box", "exec", b, "--", "python3", "-c",
                               "import socket; socket.create_connection(('127.0.0.1', 8000), 1)")[0] == 0,
                   timeout=15, what="the server in the box")
        e = json.loads(eup.ok("--json", "box", "expose", b, "8000"))
        host, port = e["url"].split("//")[1].rstrip("/").split(":")
        token = "Bearer " + e["token"]
        s = socket.create_connection((host, int(port)), timeout=10)
        f = s.makefile("rb")

        def request(auth):
            h = f"GET /headers HTTP/1.1\r\nHost: {host}\r\n" + (f"Authorization: {auth}\r\n" if auth else "") + "\r\n"
            s.sendall(h.encode())
            status = f.readline().decode()
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            return status.split()[1], f.read(length)

        code, body = request(token)
        assert code == "200" and "authorization" not in json.loads(body)
        # The same connection, kept alive: the next request is authenticated and stripped too.
        code, body = request(token)
        assert code == "200" and "authorization" not in json.loads(body)
        code, body = request(None)
        assert code == "401", body
        s.close()
    finally:
        eup.rm(b)


def dns_query(up, box, name, qtype):
    """The raw answer netd gives the box, as (rcode, [(section, type, rdata-as-ip-or-hex)])."""
    script = f"""
import socket, struct, random
q = struct.pack('!HHHHHH', random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
for label in {name!r}.split('.'):
    q += bytes([len(label)]) + label.encode()
q += b'\\0' + struct.pack('!HH', {qtype}, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, ('10.0.0.53', 53))
print(s.recv(4096).hex())
"""
    m = bytes.fromhex(up.ok("box", "exec", box, "--", "python3", "-c", script, timeout=60).strip())
    rcode = m[3] & 0xF
    qd, an, ns, ar = struct.unpack("!HHHH", m[4:12])

    def skip_name(at):
        while True:
            n = m[at]
            if n & 0xC0 == 0xC0:
                return at + 2
            if n == 0:
                return at + 1
            at += 1 + n

    at = 12
    for _ in range(qd):
        at = skip_name(at) + 4
    records = []
    for i in range(an + ns + ar):
        at = skip_name(at)
        rtype, _, _, rlen = struct.unpack("!HHIH", m[at:at + 10])
        data = m[at + 10:at + 10 + rlen]
        records.append((rtype, socket.inet_ntoa(data) if rtype == 1 and rlen == 4 else data.hex()))
        at += 10 + rlen
    return rcode, records


def test_dns_gives_no_private_address_in_any_record_type(eup, lab):
    _, b = eup.create("--network", "allow-all")
    try:
        # The lab's name for the private host: A, ANY and MX (its address as additional data).
        for qtype in (1, 255, 15):
            rcode, records = dns_query(eup, b, "rebind.upt.test", qtype)
            assert lab.priv_ip not in [r[1] for r in records], (qtype, records)
        # HTTPS/SVCB records' address hints are not looked into: never answered.
        for qtype in (64, 65):
            rcode, records = dns_query(eup, b, "allowed.upt.test", qtype)
            assert records == [], (qtype, records)
        # A public name's MX still comes with its address.
        rcode, records = dns_query(eup, b, "allowed.upt.test", 15)
        assert (1, lab.inet_ip) in records, records
    finally:
        eup.rm(b)
