"""A small "internet" of test hosts for the network tests, in network namespaces of our own: no
traffic ever goes beyond this host. Each host is a namespace joined to the host by a veth pair,
running Python's HTTP server:

  internet   198.18.N.2   (RFC 2544 benchmark range: not private, so boxes may reach it)
  private    10.77.N.2    (an RFC 1918 service boxes must not reach unless the operator opens it)
  metadata   169.254.77.N (a link-local address standing for a cloud metadata service, routed to
             the private host; not 169.254.169.254 itself, so this host's own metadata service,
             if it has one, is never shadowed)

The internet host also answers at 198.18.N.3 (a second "site") and runs HTTPS (port 443, a
certificate for *.upt.test from a test CA of the lab's own, `ca_cert`) and a DNS server at
198.18.N.53 for the lab's names (`names`): allowed.upt.test, api.upt.test, deep.sub.upt.test ->
198.18.N.2; other.upt.test -> 198.18.N.3; rebind.upt.test -> the private host; meta.upt.test -> the
metadata stand-in; badcert.test -> 198.18.N.2, whose certificate does not name it. Servers: tests/e2e/labserver.py.

Everything is torn down by close(), also when a test failed half-way."""

import json
import os
import random
import subprocess
import tempfile
import time
import uuid


def sh(*argv, check=True):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"{argv!r}: {r.stderr.strip()}")
    return r


class NetLab:
    def __init__(self):
        tag = uuid.uuid4().hex[:5]
        n = random.randint(1, 250)
        self.inet_ip, self.priv_ip, self.metadata_ip = f"198.18.{n}.2", f"10.77.{n}.2", f"169.254.77.{n}"
        self.inet_gw, self.priv_gw = f"198.18.{n}.1", f"10.77.{n}.1"
        self.other_ip, self.dns_ip = f"198.18.{n}.3", f"198.18.{n}.53"
        self.names = {"allowed.upt.test": self.inet_ip, "api.upt.test": self.inet_ip,
                      "deep.sub.upt.test": self.inet_ip, "other.upt.test": self.other_ip,
                      "rebind.upt.test": self.priv_ip, "meta.upt.test": self.metadata_ip,
                      "badcert.test": self.inet_ip}
        self.priv_net = f"10.77.{n}.0/24"
        self.hosts = [("upt-i" + tag, f"198.18.{n}", "inet"), ("upt-p" + tag, f"10.77.{n}", "priv")]
        self.servers = []
        self.dir = tempfile.mkdtemp(prefix="upstream-netlab-")
        with open(os.path.join(self.dir, "hello.txt"), "w") as f:
            f.write("hello from the test internet\n")
        try:
            for name, net, _ in self.hosts:
                sh("ip", "netns", "add", name)
                sh("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
                sh("ip", "addr", "add", f"{net}.1/24", "dev", name)
                sh("ip", "link", "set", name, "up")
                for cmd in (["ip", "addr", "add", f"{net}.2/24", "dev", "eth0"], ["ip", "link", "set", "lo", "up"],
                            ["ip", "link", "set", "eth0", "up"], ["ip", "route", "add", "default", "via", f"{net}.1"]):
                    sh("ip", "netns", "exec", name, *cmd)
            inet, priv = self.hosts[0][0], self.hosts[1][0]
            for ip in (self.other_ip, self.dns_ip):
                sh("ip", "netns", "exec", inet, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "netns", "exec", priv, "ip", "addr", "add", f"{self.metadata_ip}/32", "dev", "lo")
            sh("ip", "route", "add", f"{self.metadata_ip}/32", "via", self.priv_ip, "dev", priv)
            self._make_ca()
            zone = os.path.join(self.dir, "zone.json")
            with open(zone, "w") as f:
                json.dump(self.names, f)
            self._serve(inet, "--http", "80", "--http", "8080", "--https", "443", "--cert", self.cert,
                        "--key", self.key, "--dns", self.dns_ip, "--zone", zone)
            self._serve(priv, "--http", "80")
            for url in (self.url(self.inet_ip, 8080), self.url(self.priv_ip), self.url(self.metadata_ip),
                        self.url(self.other_ip)):
                self._wait(url)
            self._wait(f"https://{self.inet_ip}/hello.txt", "--cacert", self.ca_cert, "--resolve",
                       f"allowed.upt.test:443:{self.inet_ip}", "https://allowed.upt.test/hello.txt")
        except BaseException:
            self.close()
            raise

    def url(self, ip, port=80):
        return f"http://{ip}:{port}/hello.txt"

    def _make_ca(self):
        """The lab's own CA and a certificate for its names."""
        d = self.dir
        self.ca_cert, ca_key = os.path.join(d, "ca.crt"), os.path.join(d, "ca.key")
        self.cert, self.key = os.path.join(d, "server.crt"), os.path.join(d, "server.key")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        sh("openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", self.ca_cert, "-days", "2",
           "-subj", "/CN=upstream netlab CA")
        csr = os.path.join(d, "server.csr")
        sh("openssl", "req", *ec, "-keyout", self.key, "-out", csr, "-subj", "/CN=upt.test")
        ext = os.path.join(d, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:upt.test,DNS:*.upt.test,DNS:*.sub.upt.test\n")
        sh("openssl", "x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", ca_key, "-CAcreateserial",
           "-out", self.cert, "-days", "2", "-extfile", ext)

    def _serve(self, ns, *args):
        p = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3",
                              os.path.join(os.path.dirname(os.path.abspath(__file__)), "labserver.py"), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers.append(p)

    def config(self, **extra):
        """The network section of a configuration that resolves the lab's names and trusts its CA."""
        return {"network": {"resolvers": [self.dns_ip], "trust_ca": self.ca_cert, **extra}}

    def _wait(self, url, *curl_args):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sh("curl", "-sf", "--max-time", "2", *(curl_args or (url,)), check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"test host {url} did not come up")

    def close(self):
        for p in self.servers:
            p.kill()
            p.wait(10)
        sh("ip", "route", "del", f"{self.metadata_ip}/32", check=False)
        for name, _, _ in self.hosts:
            sh("ip", "link", "del", name, check=False)
            sh("ip", "netns", "del", name, check=False)
        subprocess.run(["rm", "-rf", self.dir])
