"""Pause and resume: frozen processes use no CPU and keep their state; work wakes a paused box."""

import time

import pytest

from upstream_e2e import wait_until


def cpu(up, box):
    return up.inspect(box)["usage"]["cpu_seconds"]


def events(up, box):
    return [(e["state"], e["reason"]) for e in up.inspect(box)["events"]]


@pytest.fixture
def box(up):
    box_id, name = up.create()
    try:
        yield name
    finally:
        up.rm(box_id)


def test_pause_freezes_and_resume_continues(up, box):
    # A busy loop that counts in a shell variable: its state lives only in the process's memory.
    up.ok("box", "exec", "--detach", box, "--", "bash", "-c",
          "i=0; while :; do i=$((i+1)); if (( i % 2000 == 0 )); then echo $i > /tmp/n.new; "
          "mv /tmp/n.new /tmp/n; fi; done")
    wait_until(lambda: up("box", "exec", box, "--", "test", "-s", "/tmp/n")[0] == 0,
               what="counter started")
    assert up.ok("box", "pause", box).strip() == up.inspect(box)["id"]
    j = up.inspect(box)
    assert j["state"] == "paused"
    assert isinstance(j["init_pid"], int)
    # Frozen: no CPU is used while paused (inspect does not wake the box).
    c0 = cpu(up, box)
    time.sleep(0.6)
    c1 = cpu(up, box)
    assert c1 - c0 < 0.05, (c0, c1)
    assert up.inspect(box)["state"] == "paused"
    # Pausing again is a no-op.
    up.ok("box", "pause", box)
    # The file the loop writes did not move while it was frozen; after resume it continues from
    # where it was (the counter is not restarted).
    up.ok("box", "resume", box)
    assert up.inspect(box)["state"] == "running"
    first = int(up.ok("box", "exec", box, "--", "cat", "/tmp/n"))
    wait_until(lambda: int(up.ok("box", "exec", box, "--", "cat", "/tmp/n")) > first,
               what="counter moving again")
    later = int(up.ok("box", "exec", box, "--", "cat", "/tmp/n"))
    assert later > first >= 2000
    assert cpu(up, box) > c1
    ev = events(up, box)
    assert ("paused", "paused") in ev and ("running", "resumed") in ev


def test_exec_and_files_wake_a_paused_box(up, box):
    up.ok("box", "exec", box, "--", "sh", "-c", "echo kept > /tmp/f")
    up.ok("box", "pause", box)
    assert up.ok("box", "exec", box, "--", "cat", "/tmp/f") == "kept\n"
    assert up.inspect(box)["state"] == "running"
    assert ("running", "resumed for an exec") in events(up, box)
    up.ok("box", "pause", box)
    rc, out, err = up("box", "cp", f"{box}:/tmp/f", "-", text=False)
    assert rc == 0, err
    assert b"kept\n" in out
    assert up.inspect(box)["state"] == "running"
    assert ("running", "resumed for a file call") in events(up, box)


def test_stop_and_rm_of_a_paused_box(up):
    box_id, name = up.create()
    try:
        up.ok("box", "exec", "--detach", name, "--", "sleep", "600")
        up.ok("box", "pause", name)
        # A paused box is stopped promptly (it is thawed to receive its signals).
        t = time.monotonic()
        up.ok("box", "stop", "-t", "2s", name)
        assert time.monotonic() - t < 10
        assert up.inspect(name)["state"] == "stopped"
        up.ok("box", "start", name)
        up.ok("box", "pause", name)
        rc, out, err = up("box", "rm", name)
        assert rc != 0 and "paused" in err and "--force" in err
        assert up.inspect(name)["state"] == "paused"
        up.ok("box", "rm", "-f", name)
        rc, _, err = up("box", "inspect", name)
        assert rc != 0 and "no such box" in err
    finally:
        up.rm(box_id)


def test_bad_pause_and_resume(up, box):
    # Resuming a running box is a no-op; start resumes a paused one.
    up.ok("box", "resume", box)
    up.ok("box", "pause", box)
    up.ok("box", "start", box)
    assert up.inspect(box)["state"] == "running"
    up.ok("box", "stop", "-t", "1s", box)
    before = events(up, box)
    rc, _, err = up("box", "pause", box)
    assert rc != 0 and "stopped" in err and "only a running box can be paused" in err
    rc, _, err = up("box", "resume", box)
    assert rc != 0 and "not paused" in err and "box start" in err
    assert events(up, box) == before
    rc, _, err = up("box", "resume", "no-such-box-here")
    assert rc != 0 and "no-such-box-here" in err
