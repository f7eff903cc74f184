"""The warm pool: ready boxes for configured (image, limits) shapes, handed out by creates that ask
for exactly that shape, refilled in the background by `upstream serve`, never reused."""

import json
import re
import os
import signal
import time
from pathlib import Path

import pytest

from api_client import Api
from upstream_e2e import Server, unique_name, wait_until

SHAPE = ["-m", "256m", "--pids", "512"]
IMAGE = "pooltools"


def write_config(up, cfg):
    Path(up.home, "config.json").write_text(json.dumps(cfg))


def pool(up):
    return {(s["image"], s["limits"].get("memory")): s for s in up.json("pool", "ls")}


def ready(up, image="host", memory=256 << 20):
    s = pool(up)[(image, memory)]
    assert "error" not in s, s
    return s["ready"]


@pytest.fixture(scope="module")
def keys(own_up):
    return {t: own_up.json("keys", "create", "--tenant", t) for t in ("acme", "other")}


@pytest.fixture(scope="module")
def server(own_up, keys):
    # An image to pool boxes of, made before the configuration names it.
    own_up.ok("image", "build", IMAGE, "--run", "echo tool > /opt/tool")
    write_config(own_up, {"warm_pool": [
        {"image": "host", "memory": "256m", "pids": 512, "size": 2},
        {"image": IMAGE, "memory": "128m", "size": 1},
    ]})
    s = Server(own_up, "--policy-interval", "0")
    try:
        wait_until(lambda: ready(own_up) == 2 and ready(own_up, IMAGE, 128 << 20) == 1,
                   timeout=60, what="the pool to fill")
        yield s
    finally:
        s.stop()


def test_pooled_boxes_are_nobodys(own_up, server):
    assert own_up.json("system", "info")["pooled"] == 3
    names = [b["name"] for b in own_up.ls_json()]
    assert not any(n.startswith("box-") for n in names), names
    # The human listing gives the limits in units.
    table = own_up.ok("pool", "ls")
    assert re.search(r"^host\s+memory=256 MiB pids=512\s+\d/2", table, re.M), table


def test_matching_create_takes_a_ready_box_and_it_is_refilled(own_up, server):
    name = unique_name("warm")
    out = own_up.ok("box", "create", "--name", name, *SHAPE, "-e", "GREETING=hi",
                    "-l", "team=blue", "-u", "user", "-w", "/tmp").strip()
    try:
        j = own_up.inspect(name)
        assert j["id"] == out
        assert j["state"] == "running" and j["state_reason"] == "created (from the warm pool)"
        assert j["labels"] == {"team": "blue"}
        # It is the owner's box in every respect: name and hostname, env, user, workdir.
        got = own_up.ok("box", "exec", name, "--", "sh", "-c",
                        "hostname; cat /etc/hostname; grep -c " + name + " /etc/hosts; "
                        "echo $GREETING; id -un; pwd")
        assert got == f"{name}\n{name}\n1\nhi\nuser\n/tmp\n"
        assert [e["exec"] for e in own_up.json("box", "logs", name)] == [1]
        # The background filler makes up for it.
        wait_until(lambda: ready(own_up) == 2, timeout=30, what="the pool to be refilled")
    finally:
        own_up.rm(name)


def test_nothing_of_a_previous_owner_is_handed_out(own_up, server):
    first = unique_name("first")
    a = own_up.ok("box", "create", "--name", first, *SHAPE).strip()
    own_up.ok("box", "exec", first, "--", "sh", "-c",
              "echo s3cret > /home/user/secret; echo s3cret > /tmp/secret")
    own_up.ok("box", "exec", "-d", first, "--", "sleep", "600")
    own_up.rm(first)
    wait_until(lambda: ready(own_up) == 2, timeout=30, what="the pool to be refilled")
    ids = set()
    boxes = []
    try:
        for _ in range(3):  # more than the pool holds: two warm, then cold
            n = unique_name("next")
            ids.add(own_up.ok("box", "create", "--name", n, *SHAPE).strip())
            boxes.append(n)
            out = own_up.ok("box", "exec", n, "--", "sh", "-c",
                            "ls /home/user /tmp; ps -e -o comm= | grep -c sleep || true")
            assert "secret" not in out and out.strip().endswith("0"), out
        assert a not in ids
        reasons = [own_up.inspect(n)["state_reason"] for n in boxes]
        # The first two came from the full pool; the third may too, if the refill was quicker.
        assert reasons[:2] == ["created (from the warm pool)"] * 2, reasons
    finally:
        for n in boxes:
            own_up.rm(n)


def test_other_shapes_are_created_cold(own_up, server):
    _, b = own_up.create("-m", "300m")
    try:
        assert own_up.inspect(b)["state_reason"] == "created"
    finally:
        own_up.rm(b)


def test_a_pooled_image_shape(own_up, server):
    _, b = own_up.create("--image", IMAGE, "-m", "128m")
    try:
        assert own_up.inspect(b)["state_reason"] == "created (from the warm pool)"
        assert own_up.ok("box", "exec", b, "--", "cat", "/opt/tool") == "tool\n"
    finally:
        own_up.rm(b)
    wait_until(lambda: ready(own_up, IMAGE, 128 << 20) == 1, timeout=30, what="image shape refill")


def test_tenants_get_their_own_boxes_from_the_pool(own_up, server, keys):
    api = Api(server.url, keys["acme"]["key"])
    other = Api(server.url, keys["other"]["key"])
    st, j = api("POST", "/v1/boxes", {"name": unique_name("tenant"),
                                      "limits": {"memory": "256m", "pids": 512}})
    assert st == 201, j
    try:
        assert j["state_reason"] == "created (from the warm pool)"
        st, mine = api("GET", "/v1/boxes")
        assert [b["id"] for b in mine["boxes"]] == [j["id"]]
        st, theirs = other("GET", "/v1/boxes")
        assert theirs["boxes"] == []
        st, _ = other("GET", f"/v1/boxes/{j['id']}")
        assert st == 404
    finally:
        api("DELETE", f"/v1/boxes/{j['id']}?force=true")


def test_pool_survives_a_kill_of_the_server(own_up, server):
    wait_until(lambda: ready(own_up) == 2, timeout=30, what="a full pool")
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    assert ready(own_up) == 2  # the boxes are not the server's: they keep running
    s = Server(own_up, "--policy-interval", "0")
    try:
        time.sleep(1)  # a fill pass runs at start; it must not add boxes to a full pool
        assert own_up.json("system", "info")["pooled"] == 3
        _, b = own_up.create(*SHAPE)
        assert own_up.inspect(b)["state_reason"] == "created (from the warm pool)"
        own_up.rm(b)
        wait_until(lambda: ready(own_up) == 2, timeout=30, what="refill by the new server")
    finally:
        s.stop()
    server.proc = s.proc  # for the fixture's stop


def test_smaller_pool_and_drain(own_up, server):
    write_config(own_up, {"warm_pool": [{"image": "host", "memory": "256m", "pids": 512,
                                         "size": 1}]})
    try:
        out = own_up.ok("pool", "fill")
        assert "the pool is smaller now" in out and "no longer configured" in out, out
        assert own_up.json("system", "info")["pooled"] == 1
        assert "removed 1 pooled boxes" in own_up.ok("pool", "drain")
        assert own_up.json("system", "info")["pooled"] == 0
        # Nothing left behind: no volume or cgroup without a listed box.
        listed = {b["id"] for b in own_up.ls_json()}
        assert set(os.listdir(Path(own_up.home, "pool", "boxes"))) == listed
    finally:
        write_config(own_up, {"warm_pool": [
            {"image": "host", "memory": "256m", "pids": 512, "size": 2},
            {"image": IMAGE, "memory": "128m", "size": 1},
        ]})


BAD_CONFIGS = [
    ("{not json", "not valid JSON"),
    ('["a"]', "must hold a JSON object"),
    ('{"warm_pools": []}', "unknown field 'warm_pools'"),
    ('{"warm_pool": {"image": "host"}}', "warm_pool must be a list"),
    ('{"warm_pool": [{"image": "host"}]}', "warm_pool[0] has no size"),
    ('{"warm_pool": [{"size": 1, "memory": "lots"}]}', "memory"),
    ('{"warm_pool": [{"size": 1, "memory": "1m"}]}', "memory limit must be at least 16 MiB"),
    ('{"warm_pool": [{"size": 1, "colour": "red"}]}', "unknown field 'warm_pool[0].colour'"),
    ('{"warm_pool": [{"size": -1}]}', "warm_pool[0].size"),
    ('{"prices": {"cpu_core_hour": -1}}', "prices.cpu_core_hour must be a number of at least 0"),
    ('{"prices": {"gpu_hour": 1}}', "unknown field 'prices.gpu_hour'"),
    ('{"proc_view": "yes"}', "proc_view must be true"),
    ('{"tenants": {"per_tenant": 3}}', "tenants.per_tenant must map tenant names to rules"),
]


@pytest.mark.parametrize("text,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_configuration_is_refused_by_name(up, tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    before = up.ok("box", "ls", "-q")
    up.env["UPSTREAM_CONFIG"] = str(path)
    try:
        rc, out, err = up("box", "create")
    finally:
        del up.env["UPSTREAM_CONFIG"]
    assert rc != 0 and message in err and err.count(str(path)) == 1, err
    assert up.ok("box", "ls", "-q") == before


def test_proc_view_shows_the_box_its_limits_unless_turned_off(up, tmp_path):
    host_total = [line for line in open("/proc/meminfo") if line.startswith("MemTotal:")][0].split()[1]
    name = up.ok("box", "create", "--memory", "256m").strip()
    try:
        assert up.ok("box", "exec", name, "--", "awk", "/^MemTotal:/ {print $2}", "/proc/meminfo") == "262144\n"
        assert "the box's own limits" in up.ok("system", "info")
    finally:
        up.ok("box", "rm", "-f", name)
    path = tmp_path / "config.json"
    path.write_text('{"proc_view": false}')
    up.env["UPSTREAM_CONFIG"] = str(path)
    try:
        name = up.ok("box", "create", "--memory", "256m").strip()
        try:
            assert up.ok("box", "exec", name, "--", "awk", "/^MemTotal:/ {print $2}", "/proc/meminfo") == host_total + "\n"
        finally:
            up.ok("box", "rm", "-f", name)
        assert "off in the configuration (proc_view)" in up.ok("system", "info")
    finally:
        del up.env["UPSTREAM_CONFIG"]
