"""A small "internet" of test hosts for the network tests, in network namespaces of our own: no
traffic ever goes beyond this host. Each host is a namespace joined to the host by a veth pair,
running Python's HTTP server:

  internet   198.18.N.2   (RFC 2544 benchmark range: not private, so boxes may reach it)
  private    10.77.N.2    (an RFC 1918 service boxes must not reach unless the operator opens it)
  metadata   169.254.77.N (a link-local address standing for a cloud metadata service, routed to
             the private host; not 169.254.169.254 itself, so this host's own metadata service,
             if it has one, is never shadowed)

Everything is torn down by close(), also when a test failed half-way."""

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
            priv = self.hosts[1][0]
            sh("ip", "netns", "exec", priv, "ip", "addr", "add", f"{self.metadata_ip}/32", "dev", "lo")
            sh("ip", "route", "add", f"{self.metadata_ip}/32", "via", self.priv_ip, "dev", priv)
            self._serve(self.hosts[0][0], self.inet_ip, 8080)
            self._serve(priv, self.priv_ip, 80)
            self._serve(priv, self.metadata_ip, 80)
            for url in (self.url(self.inet_ip, 8080), self.url(self.priv_ip), self.url(self.metadata_ip)):
                self._wait(url)
        except BaseException:
            self.close()
            raise

    def url(self, ip, port=80):
        return f"http://{ip}:{port}/hello.txt"

    def _serve(self, ns, ip, port):
        p = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-m", "http.server", str(port),
                              "--bind", ip, "--directory", self.dir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers.append(p)

    def _wait(self, url):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sh("curl", "-sf", "--max-time", "2", url, check=False).returncode == 0:
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
