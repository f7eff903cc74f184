"""Box lifecycle: create, inspect, ls (and its filters), stop/start, rm, run."""

import re
import subprocess
import time
from datetime import datetime, timezone

import pytest

from upstream_e2e import ID_RE, unique_name, wait_until


def parse_time(text):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_create_prints_id_and_inspect_shows_everything(up):
    name = unique_name()
    before = datetime.now(timezone.utc)
    rc, out, err = up(
        "box", "create", "--name", name, "--label", "team=alpha", "--label", "tier=2",
        "--env", "GREETING=hello world", "--memory", "256m", "--cpus", "0.5", "--pids", "100",
    )
    assert rc == 0, err
    box_id = out.strip()
    assert ID_RE.match(box_id), out
    assert out == box_id + "\n"
    try:
        j = up.inspect(name)
        assert j["id"] == box_id
        assert j["name"] == name
        assert j["state"] == "running"
        assert j["image"] == "host"
        assert j["labels"] == {"team": "alpha", "tier": "2"}
        assert j["env"] == {"GREETING": "hello world"}
        assert j["limits"]["memory"] == 256 * 1024 * 1024
        assert j["limits"]["cpus"] == 0.5
        assert j["limits"]["pids"] == 100
        assert j["limits"]["disk"] == 2 * 1024**3  # UPSTREAM_DEFAULT_DISK=2g
        assert j["user"] == "root"
        assert j["workdir"] == "/home/user"
        assert j["network"] == "none"
        created = parse_time(j["created_at"])
        assert abs((created - before).total_seconds()) < 60
        states = [e["state"] for e in j["events"]]
        assert states[0] == "creating" and states[-1] == "running", j["events"]
        for e in j["events"]:
            parse_time(e["at"])
        assert isinstance(j["init_pid"], int) and j["init_pid"] > 1
        # The same box by id and by a unique id prefix.
        assert up.inspect(box_id)["name"] == name
        assert up.inspect(box_id[:8])["name"] == name
        # The box's env reaches its execs.
        assert up.ok("box", "exec", name, "--", "printenv", "GREETING") == "hello world\n"
        assert up.ok("box", "exec", name, "--", "hostname") == name + "\n"
        # Human inspect mentions the same things.
        human = up.ok("box", "inspect", name)
        assert box_id in human and name in human and "team=alpha" in human and "running" in human
    finally:
        up.rm(box_id)


def test_create_user_and_workdir(up):
    box_id, name = up.create("--user", "user", "--workdir", "/tmp")
    try:
        j = up.inspect(name)
        assert j["user"] == "user" and j["workdir"] == "/tmp"
        assert up.ok("box", "exec", name, "--", "sh", "-c", "id -u; pwd") == "1000\n/tmp\n"
    finally:
        up.rm(box_id)


def test_default_name_and_hostname(up):
    rc, out, err = up("box", "create")
    assert rc == 0, err
    box_id = out.strip()
    try:
        j = up.inspect(box_id)
        assert j["name"], j
        assert up.inspect(j["name"])["id"] == box_id
        assert up.ok("box", "exec", box_id, "--", "hostname") == j["name"] + "\n"
        assert j["limits"]["memory"] == 2 * 1024**3  # documented default: 2 GiB
        assert j["limits"]["pids"] == 4096
    finally:
        up.rm(box_id)


def test_ls_json_quiet_and_label_filter(up):
    a_id, a = up.create("--label", "suite=ls", "--label", "color=red")
    b_id, b = up.create("--label", "suite=ls", "--label", "color=blue")
    c_id, c = up.create("--label", "suite=other")
    try:
        listing = up.ls_json()
        assert isinstance(listing, list)
        by_id = {x["id"]: x for x in listing}
        for i, n in ((a_id, a), (b_id, b), (c_id, c)):
            assert by_id[i]["name"] == n
            assert by_id[i]["state"] == "running"
            assert by_id[i]["image"] == "host"
        assert by_id[a_id]["labels"] == {"suite": "ls", "color": "red"}

        quiet = up.ok("box", "ls", "-q").split()
        assert set(quiet) == set(by_id)
        assert all(ID_RE.match(x) for x in quiet)

        assert set(up.ok("box", "ls", "-q", "--label", "suite=ls").split()) == {a_id, b_id}
        assert up.ok("box", "ls", "-q", "--label", "suite=ls", "--label", "color=blue").split() == [b_id]
        assert up.ok("box", "ls", "-q", "--label", "suite=ls", "--label", "color=green").split() == []
        assert up.ok("box", "ls", "-q", "--label", "suite=nope").split() == []
        labelled = up.json("box", "ls", "--label", "suite=other")
        assert [x["id"] for x in labelled] == [c_id]

        table = up.ok("box", "ls", "--label", "suite=ls")
        lines = table.splitlines()
        assert lines[0].split() == ["ID", "NAME", "IMAGE", "STATE", "NETWORK", "PORTS", "CREATED"]
        assert len(lines) == 3 and a in table and b in table and c not in table
        # Newest first.
        assert lines[1].split()[:5] == [b_id, b, "host", "running", "none"], table
        assert lines[2].split()[:2] == [a_id, a], table
    finally:
        for i in (a_id, b_id, c_id):
            up.rm(i)


def test_stop_start_keeps_files_and_state_filter(up, box):
    up.ok("box", "exec", box, "--", "sh", "-c",
          "echo kept > /home/user/kept.txt && mkdir -p /root/d && echo deep > /root/d/f && echo t > /tmp/t")
    box_id = up.inspect(box)["id"]
    assert up.ok("box", "stop", "-t", "2s", box).strip() == box_id

    j = up.inspect(box)
    assert j["state"] == "stopped"
    assert j["stopped_at"]
    assert "init_pid" not in j
    assert box_id in up.ok("box", "ls", "-q", "--state", "stopped").split()
    assert box_id not in up.ok("box", "ls", "-q", "--state", "running").split()
    assert [x["id"] for x in up.json("box", "ls", "--state", "stopped") if x["id"] == box_id] == [box_id]

    # exec on a stopped box: 125 and an error, nothing run.
    rc, out, err = up("box", "exec", box, "--", "true")
    assert rc == 125
    assert out == ""
    assert err.startswith("upstream: error:") and "stopped" in err

    assert up.ok("box", "start", box).strip() == box_id
    assert up.inspect(box)["state"] == "running"
    assert box_id in up.ok("box", "ls", "-q", "--state", "running").split()
    assert up.ok("box", "exec", box, "--", "cat", "/home/user/kept.txt", "/root/d/f", "/tmp/t") == "kept\ndeep\nt\n"
    states = [e["state"] for e in up.inspect(box)["events"]]
    assert states[-4:] == ["stopping", "stopped", "starting", "running"], states


def test_stop_kills_processes(up, box):
    n = up.ok("box", "exec", "-d", box, "--", "sleep", "300").strip()
    up.ok("box", "stop", "-t", "1s", box, timeout=30)
    up.ok("box", "start", box)
    assert up.json("box", "ps", box) == []
    out = up.ok("box", "exec", box, "--", "ps", "-eo", "args")
    assert "sleep 300" not in out
    logs = {str(x["exec"]): x for x in up.json("box", "logs", box)}
    assert logs[n]["state"] != "running"


def test_stop_ends_a_foreground_exec(up, box):
    proc = subprocess.Popen([up.binary, "box", "exec", box, "--", "sleep", "60"], env=up.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: up.json("box", "ps", box), what="the exec to start")
        t0 = time.monotonic()
        up.ok("box", "stop", "-t", "2s", box, timeout=30)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert time.monotonic() - t0 < 15
    assert proc.returncode != 0
    assert b"stopped" in err, err
    assert up.inspect(box)["state"] == "stopped"


def test_rm_refuses_running_box_without_force(up):
    box_id, name = up.create()
    try:
        rc, out, err = up("box", "rm", name)
        assert rc != 0
        assert err.startswith("upstream: error:") and err.count("\n") == 1, err
        assert box_id in up.ok("box", "ls", "-q").split()
        assert up.inspect(name)["state"] == "running"
        assert up.ok("box", "exec", name, "--", "true") == ""
    finally:
        rc, out, err = up("box", "rm", "-f", name)
    assert rc == 0, err
    assert out.strip() == box_id
    assert box_id not in up.ok("box", "ls", "-q").split()
    rc, _, err = up("box", "inspect", name)
    assert rc != 0 and "no such box" in err


def test_rm_stopped_box_without_force(up):
    box_id, name = up.create()
    up.ok("box", "stop", "-t", "1s", name)
    rc, out, err = up("box", "rm", name)
    assert rc == 0, err
    assert box_id not in up.ok("box", "ls", "-q").split()


def test_rm_with_one_unknown_name_removes_nothing(up):
    box_id, name = up.create()
    try:
        rc, out, err = up("box", "rm", "-f", name, "no-such-box-xyz")
        assert rc != 0
        assert box_id in up.ok("box", "ls", "-q").split()
    finally:
        up.rm(box_id)


def test_run_rm_prints_and_leaves_no_box(up):
    before = up.ls_json()
    rc, out, err = up("box", "run", "--rm", "--", "echo", "hi")
    assert rc == 0, err
    assert out == "hi\n"
    assert up.ls_json() == before


def test_run_exit_code_passes_through(up):
    before = up.ls_json()
    rc, out, err = up("box", "run", "--rm", "--", "sh", "-c", "echo partial; exit 3")
    assert rc == 3
    assert out == "partial\n"
    rc, out, err = up("box", "run", "--rm", "--", "no-such-command-xyz")
    assert rc == 127
    assert up.ls_json() == before


def test_run_without_rm_keeps_box(up):
    name = unique_name("run")
    rc, out, err = up("box", "run", "--label", "via=run", "--name", name, "--", "sh", "-c", "echo made > /home/user/f")
    assert rc == 0, err
    try:
        j = up.inspect(name)
        assert j["labels"] == {"via": "run"}
        assert up.ok("box", "exec", name, "--", "cat", "/home/user/f") == "made\n"
    finally:
        up.rm(name)


def test_run_command_with_dash_c_after_env(up):
    before = up.ls_json()
    rc, out, err = up("box", "run", "--rm", "-e", "X=41", "--", "python3", "-c",
                      "import os; print(int(os.environ['X']) + 1)")
    assert rc == 0, err
    assert out == "42\n"
    assert up.ls_json() == before


def test_run_stdin_and_shell(up):
    rc, out, err = up("box", "run", "--rm", "-i", "--", "tr", "a-z", "A-Z", input="shout\n")
    assert (rc, out) == (0, "SHOUT\n"), err
    rc, out, err = up("box", "run", "--rm", "-c", "echo $((6*7)) $0")
    assert rc == 0, err
    assert out.split()[0] == "42"


def test_limits_are_enforced(up):
    box_id, name = up.create("--memory", "256m", "--pids", "100")
    try:
        # More processes than the limit: dash reports the failed fork and gives up.
        rc, out, err = up("box", "exec", name, "--", "sh", "-c",
                          "for i in $(seq 150); do sleep 2 & done; echo spawned-all", timeout=60)
        assert rc != 0 and "spawned-all" not in out, (rc, out, err)
        assert "fork" in err.lower(), err
        # More memory than the limit: the command is OOM-killed (137), upstream says why.
        rc, out, err = up("box", "exec", name, "--", "python3", "-c",
                          "b = bytearray(400 * 1024 * 1024); print('allocated')", timeout=60)
        assert rc == 137, (rc, out, err)
        assert "allocated" not in out
        assert "out of memory" in err
        # The box survives both.
        assert up.inspect(name)["state"] == "running"
        assert up.ok("box", "exec", name, "--", "echo", "alive") == "alive\n"
    finally:
        up.rm(box_id)


def test_a_command_on_several_boxes_goes_on_past_a_failure(up):
    a, _ = up.create()
    b, b_name = up.create()
    c, _ = up.create()
    try:
        up.ok("box", "stop", "-t", "0", b)
        rc, out, err = up("box", "pause", a, b, c)
        assert rc == 1, (out, err)
        assert out.split() == [a, c]  # the box after the failure was paused too
        assert f"box {b_name}: " in err and "only a running box can be paused" in err
        assert up.inspect(a)["state"] == "paused" and up.inspect(c)["state"] == "paused"
        # A name that is no box changes nothing, wherever it is in the list.
        rc, _, err = up("box", "resume", a, "no-such-box-" + b_name, c)
        assert rc == 1 and "no-such-box-" in err
        assert up.inspect(a)["state"] == "paused" and up.inspect(c)["state"] == "paused"
    finally:
        for x in (a, b, c):
            up.rm(x)


def test_a_box_that_filled_its_disk_is_removed(up):
    box, _ = up.create("--disk", "64m")
    up("box", "exec", box, "--", "sh", "-c", "dd if=/dev/zero of=/home/user/fill bs=1M count=128; sync")
    rc, _, err = up("box", "exec", box, "--", "sh", "-c", "echo x > /home/user/more")
    assert rc != 0 and "Disk quota exceeded" in err
    up.ok("box", "rm", "-f", box)
    assert all(b["id"] != box for b in up.ls_json())
