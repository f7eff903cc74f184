"""Usage metering: per box and per exec (`box usage`), totals over a period by tenant, box,
snapshot or label (`upstream usage`, GET /v1/usage), kept after boxes are removed, and a cost
estimate from the configuration's price table."""

import json
import time
from pathlib import Path

import pytest

from api_client import Api
from upstream_e2e import Server, unique_name, wait_until

PRICES = {"currency": "EUR", "cpu_core_hour": 0.05, "storage_gb_month": 0.1, "wall_core_hour": 0.04}
# About half a second of CPU, bounded: hashing a fixed amount of data.
BURN = "head -c 60000000 /dev/zero | sha256sum > /dev/null"


def report(up, *args):
    return up.json("usage", *args)


def group(rep, key):
    found = [g for g in rep["groups"] if g["key"] == key]
    assert len(found) == 1, (key, rep["groups"])
    return found[0]


@pytest.fixture(scope="module")
def priced(own_up):
    Path(own_up.home, "config.json").write_text(json.dumps({"prices": PRICES}))
    return own_up


def test_box_usage_per_box_and_per_exec(up):
    _, b = up.create()
    try:
        up.ok("box", "exec", b, "--", "sh", "-c", BURN)
        up.ok("box", "exec", b, "--", "sleep", "0.3")
        up.ok("snapshot", "create", b, "--name", b + "-s")
        u = up.json("box", "usage", b, "--execs", "5")
        assert u["cpu_seconds"] > 0.05
        assert u["running_seconds"] >= 0.3
        assert u["snapshots"] == 1
        execs = {e["exec"]: e for e in u["execs"]}
        assert execs[1]["cpu_seconds"] > 0.05 and execs[1]["memory_peak_bytes"] > 0
        assert execs[2]["wall_seconds"] >= 0.3 and execs[2]["cpu_seconds"] < 0.2
        text = up.ok("box", "usage", b, "--execs", "5")
        assert "running:" in text and "snapshots:    1" in text and "sha256sum" in text
    finally:
        up.rm(b)
        up("snapshot", "rm", b + "-s")


def test_totals_by_label_survive_removal_and_are_priced(priced):
    up = priced
    tag = unique_name("team")
    _, a = up.create("-l", f"team={tag}-a", "--cpus", "1")
    _, b = up.create("-l", f"team={tag}-b")
    try:
        up.ok("box", "exec", a, "--", "sh", "-c", BURN)
        up.ok("box", "exec", b, "--", "true")
        up.ok("snapshot", "create", a, "--name", a + "-s", "-l", f"team={tag}-a")
        before = report(up, "--by", "label:team")
        ga = group(before, f"{tag}-a")
        gb = group(before, f"{tag}-b")
        assert ga["boxes"] == 1 and ga["snapshots"] == 1 and gb["boxes"] == 1
        assert ga["cpu_seconds"] > 0.05 and ga["cpu_seconds"] > gb["cpu_seconds"]
        assert ga["running_seconds"] > 0
        # The price table: active CPU and storage; and what per-wall-clock billing would charge.
        storage = ga["box_storage_gb_months"] + ga["snapshot_storage_gb_months"]
        assert ga["cost"] == pytest.approx(ga["cpu_seconds"] / 3600 * 0.05 + storage * 0.1)
        assert ga["wall_clock_cost"] == pytest.approx(
            ga["core_running_seconds"] / 3600 * 0.04 + storage * 0.1)
        assert ga["core_running_seconds"] == pytest.approx(ga["running_seconds"])  # 1 CPU limit
        assert before["prices"]["currency"] == "EUR"
        assert "COST (EUR)" in up.ok("usage", "--by", "label:team")
        snaps = report(up, "--by", "snapshot", "-l", f"team={tag}-a")
        assert [g["key"].split(" ")[0] for g in snaps["groups"]] == [a + "-s"]
        assert snaps["groups"][0]["snapshots"] == 1 and snaps["groups"][0]["boxes"] == 0
        # A removed box's usage stays in the totals.
        up.rm(a)
        up.ok("snapshot", "rm", a + "-s")
        after = group(report(up, "--by", "label:team", "-l", f"team={tag}-a"), f"{tag}-a")
        assert after["boxes"] == 1 and after["snapshots"] == 1
        assert after["cpu_seconds"] >= ga["cpu_seconds"] * 0.99
        # A period that ended before these boxes existed has none of them.
        old = report(up, "--since", "2020-01-01", "--until", "2020-02-01T00:00:00Z", "--by", "label:team")
        assert not [g for g in old["groups"] if g["key"].startswith(tag)]
        # By box: one group per box, named.
        by_box = report(up, "--by", "box", "-l", f"team={tag}-b")
        assert [g["key"] for g in by_box["groups"]] == [f"{b} ({up.inspect(b)['id']})"]
    finally:
        up.rm(a)
        up.rm(b)


def test_meter_passes_of_the_server_change_no_totals(priced):
    up = priced
    tag = unique_name("meter")
    s = Server(up, "--meter-interval", "100ms", "--policy-interval", "0")
    try:
        _, b = up.create("-l", f"team={tag}")
        up.ok("box", "exec", b, "--", "sh", "-c", BURN)
        time.sleep(0.5)  # several meter passes
        first = group(report(up, "--by", "label:team", "-l", f"team={tag}"), tag)
        up.ok("box", "stop", b)
        up.ok("box", "start", b)
        time.sleep(0.3)
        second = group(report(up, "--by", "label:team", "-l", f"team={tag}"), tag)
        # CPU is counted once across passes and runs; running time grows, minus the stop.
        assert second["cpu_seconds"] == pytest.approx(first["cpu_seconds"], rel=0.2, abs=0.05)
        assert second["running_seconds"] > first["running_seconds"]
        up.rm(b)
        third = group(report(up, "--by", "label:team", "-l", f"team={tag}"), tag)
        assert third["cpu_seconds"] == pytest.approx(second["cpu_seconds"], rel=0.2, abs=0.05)
    finally:
        s.stop()


def test_tenants_see_their_own_usage(own_up):
    keys = {t: own_up.json("keys", "create", "--tenant", t) for t in ("u-acme", "u-globex")}
    s = Server(own_up, "--policy-interval", "0")
    try:
        acme = Api(s.url, keys["u-acme"]["key"])
        globex = Api(s.url, keys["u-globex"]["key"])
        st, box = acme("POST", "/v1/boxes", {"name": unique_name("ua")})
        assert st == 201
        st, rep = acme("GET", "/v1/usage?by=tenant")
        assert st == 200 and [g["key"] for g in rep["groups"]] == ["u-acme"]
        assert rep["total"]["boxes"] == 1
        st, rep = globex("GET", "/v1/usage?by=box")
        assert st == 200 and rep["groups"] == [] and rep["total"]["boxes"] == 0
        st, err = acme("GET", "/v1/usage?since=yesterday")
        assert st == 400 and "since" in err["message"]
        st, err = acme("GET", "/v1/usage?by=colour")
        assert st == 400 and "colour" in err["message"]
        acme("DELETE", f"/v1/boxes/{box['id']}?force=true")
    finally:
        s.stop()


@pytest.mark.parametrize("args,message", [
    (["--since", "yesterday"], "invalid --since 'yesterday'"),
    (["--until", "2026-13-01"], "no such date"),
    (["--since", "1h", "--until", "2h"], "end of the period must be after its start"),
    (["--by", "colour"], "cannot group usage by 'colour'"),
    (["--by", "label:"], "label"),
    (["-l", "novalue"], "label"),
], ids=["since", "until", "order", "by", "label-key", "label"])
def test_bad_usage_queries(up, args, message):
    rc, out, err = up("usage", *args)
    assert rc != 0 and message in err, err
