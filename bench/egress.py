#!/usr/bin/python3
"""Box networks in one run on this machine, against the test internet of tests/e2e/netlab.py
(network namespaces of our own; no traffic leaves the host):

  - network set-up: create -> first exec with network none, allow-all and custom (its firewall
    rules through libnftables in-process, and through `nft -f` as the baseline);
  - added latency of the egress proxy: sequential HTTP(S) requests, each on a new connection,
    from inside a box, direct (allow-all) against through netd (custom: SNI/Host checked and
    relayed; with headers: TLS terminated and the headers added);
  - throughput: one bounded download (256 MiB by default) the same ways.

Every figure comes with its direct baseline from the same run.
  bench/egress.py [--binary build/upstream] [--requests 200] [--mib 256] [--boxes 10] [--out FILE]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from netlab import NetLab  # noqa: E402

CLIENT = r'''
import http.client, json, ssl, statistics, sys, time
host, port, scheme, n, mib = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.create_default_context(cafile=sys.argv[6] if len(sys.argv) > 6 else None)
def conn():
    return http.client.HTTPSConnection(host, port, context=ctx, timeout=30) if scheme == "https" \
        else http.client.HTTPConnection(host, port, timeout=30)
lat = []
for _ in range(n):
    t = time.perf_counter()
    c = conn(); c.request("GET", "/hello.txt"); r = c.getresponse(); r.read(); c.close()
    assert r.status == 200, r.status
    lat.append((time.perf_counter() - t) * 1000)
c = conn()
t = time.perf_counter()
c.request("GET", "/bytes/%d" % (mib << 20)); r = c.getresponse()
got = 0
while True:
    b = r.read(1 << 20)
    if not b: break
    got += len(b)
dt = time.perf_counter() - t
assert got == mib << 20, got
lat.sort()
print(json.dumps({"p50_ms": statistics.median(lat), "p90_ms": lat[int(len(lat) * 0.9)], "mib_s": mib / dt}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(REPO / "build" / "upstream"))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--boxes", type=int, default=10)
    ap.add_argument("--out", default=str(REPO / "bench" / f"results-{time.strftime('%Y-%m-%d')}-egress.json"))
    a = ap.parse_args()
    home = tempfile.mkdtemp(prefix="upstream-bench-egress-", dir="/tmp")
    env = dict(os.environ, UPSTREAM_HOME=home)

    def up(*args, extra_env=None):
        r = subprocess.run([a.binary, *args], env=dict(env, **(extra_env or {})), capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"upstream {' '.join(args)}: {r.stderr}")
        return r.stdout

    lab = NetLab()
    boxes = []
    results = {"requests": a.requests, "download_mib": a.mib}
    try:
        Path(home, "config.json").write_text(json.dumps(lab.config()))
        # Set-up: create -> first exec, per network mode, interleaved so drift hits all alike.
        # "custom-nft-exec" is custom with its firewall rules applied by running `nft -f` (the
        # baseline for libnftables in-process).
        setup = {"none": [], "allow-all": [], "custom": [], "custom-nft-exec": []}
        for _ in range(a.boxes):
            for key in setup:
                mode = key.removesuffix("-nft-exec")
                extra = ["--allow-domain", "allowed.upt.test"] if mode == "custom" else []
                nft = {"UPSTREAM_NFT": "exec"} if key.endswith("-nft-exec") else None
                t = time.perf_counter()
                b = up("box", "create", "--network", mode, *extra, extra_env=nft).strip()
                up("box", "exec", b, "--", "true")
                setup[key].append((time.perf_counter() - t) * 1000)
                up("box", "rm", "-f", b)
        results["create_to_first_exec_ms"] = {m: statistics.median(v) for m, v in setup.items()}

        # A running box's policy change (its firewall rules replaced while the caller waits).
        box = up("box", "create", "--network", "custom", "--allow-domain", "allowed.upt.test").strip()
        change = {"in-process": [], "nft-exec": []}
        n = 0
        for _ in range(a.boxes):
            for key in change:
                n += 1
                nft = {"UPSTREAM_NFT": "exec"} if key == "nft-exec" else None
                t = time.perf_counter()
                up("box", "network", box, "custom", "--allow-domain", "allowed.upt.test",
                   "--allow-cidr", f"198.18.{n % 250}.0/24", extra_env=nft)
                change[key].append((time.perf_counter() - t) * 1000)
        up("box", "rm", "-f", box)
        results["policy_change_ms"] = {k: statistics.median(v) for k, v in change.items()}

        direct = up("box", "create", "--network", "allow-all").strip()
        proxied = up("box", "create", "--network", "custom", "--allow-domain", "allowed.upt.test").strip()
        injected = up("box", "create", "--network", "custom", "--allow-domain", "api.upt.test",
                      "--header", "api.upt.test=Authorization: Bearer bench").strip()
        boxes = [direct, proxied, injected]
        for b in boxes:
            up("box", "cp", lab.ca_cert, f"{b}:/tmp/lab-ca.crt")
            up("box", "exec", b, "--", "sh", "-c", f"cat > /tmp/client.py << 'EOF'\n{CLIENT}\nEOF")

        def run(box, *args):
            return json.loads(up("box", "exec", box, "--", "python3", "/tmp/client.py", *map(str, args)))

        n, mib = a.requests, a.mib
        # The allow-all box reaches the lab by address (it resolves the names through netd too,
        # but connects straight); SNI/Host carry the name as for the others.
        for b in boxes:
            up("box", "exec", b, "--", "sh", "-c", f"echo '{lab.inet_ip} allowed.upt.test api.upt.test' >> /etc/hosts")
        runs = {
            "http_direct": (direct, "allowed.upt.test", 80, "http", n, mib),
            "http_proxied": (proxied, "allowed.upt.test", 80, "http", n, mib),
            "https_direct": (direct, "allowed.upt.test", 443, "https", n, mib, "/tmp/lab-ca.crt"),
            "https_proxied": (proxied, "allowed.upt.test", 443, "https", n, mib, "/tmp/lab-ca.crt"),
            # Intercepted: the box trusts the installation's CA (system bundle), not the lab's.
            "https_injected": (injected, "api.upt.test", 443, "https", n, mib),
        }
        for name, args in runs.items():
            results[name] = run(*args)
            print(name, results[name], flush=True)
        for kind, base in (("http_proxied", "http_direct"), ("https_proxied", "https_direct"),
                           ("https_injected", "https_direct")):
            results[kind]["added_p50_ms"] = results[kind]["p50_ms"] - results[base]["p50_ms"]
            results[kind]["throughput_ratio"] = results[kind]["mib_s"] / results[base]["mib_s"]
    finally:
        for b in boxes:
            subprocess.run([a.binary, "box", "rm", "-f", b], env=env, capture_output=True, timeout=120)
        lab.close()
        subprocess.run(["umount", "-l", os.path.join(home, "pool")], capture_output=True)
        subprocess.run(["rm", "-rf", home])
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print("results written to", a.out)


if __name__ == "__main__":
    main()
