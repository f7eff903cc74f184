"""Idle policies, applied by `upstream serve`: auto-pause after a box is idle (no exec, no file
call, no CPU use), auto-stop after it stayed paused, keep-alive; work wakes what they paused."""

import time

import pytest

from upstream_e2e import Server, unique_name, wait_until


@pytest.fixture(scope="module")
def server(own_up):
    s = Server(own_up, "--policy-interval", "200ms")
    try:
        yield s
    finally:
        s.stop()


def state(up, box):
    j = up.inspect(box)
    return j["state"], j["state_reason"]


def test_defaults_are_shown(own_up, server):
    _, b = own_up.create()
    try:
        j = own_up.inspect(b)
        assert j["policy"] == {"auto_pause_ms": 30 * 60 * 1000, "auto_stop_ms": 24 * 3600 * 1000,
                               "auto_archive_ms": 7 * 24 * 3600 * 1000, "keep_alive": False}
        assert "auto-pause after 30m" in own_up.ok("box", "inspect", b)
    finally:
        own_up.rm(b)


def test_idle_box_is_paused_and_work_wakes_it(own_up, server):
    _, b = own_up.create("--auto-pause", "1s", "--auto-stop", "never")
    try:
        own_up.ok("box", "exec", b, "--", "sh", "-c", "echo before > /home/user/f")
        # A quiet background server does not keep a box awake.
        own_up.ok("box", "exec", "-d", b, "--", "sleep", "600")
        wait_until(lambda: state(own_up, b)[0] == "paused", timeout=15, what="auto-pause")
        st, why = state(own_up, b)
        assert why.startswith("paused: idle for"), why
        # A snapshot taken of an automatically paused box is complete.
        snap = unique_name("autosnap")
        own_up.ok("snapshot", "create", b, "--name", snap)
        _, c = own_up.create("--image", snap, "--auto-pause", "never")
        assert own_up.ok("box", "exec", c, "--", "cat", "/home/user/f") == "before\n"
        own_up.rm(c)
        own_up.ok("snapshot", "rm", snap)
        # An exec wakes it, and the clock starts again.
        assert own_up.ok("box", "exec", b, "--", "cat", "/home/user/f") == "before\n"
        assert state(own_up, b) == ("running", "resumed for an exec")
        wait_until(lambda: state(own_up, b)[0] == "paused", timeout=15, what="auto-pause again")
        # A file call wakes it too.
        rc, out, err = own_up("box", "cp", f"{b}:/home/user/f", "-", text=False)
        assert rc == 0 and b"before" in out
        assert state(own_up, b) == ("running", "resumed for a file call")
        # The sleep survived every pause.
        assert "sleep" in own_up.ok("box", "exec", b, "--", "ps", "-eo", "comm")
    finally:
        own_up.rm(b)


def test_busy_and_keep_alive_boxes_stay_running(own_up, server):
    _, busy = own_up.create("--auto-pause", "1s")
    _, kept = own_up.create("--auto-pause", "1s", "--keep-alive")
    try:
        own_up.ok("box", "exec", "-d", busy, "--", "sh", "-c", "while :; do :; done")
        time.sleep(3.5)
        assert state(own_up, busy)[0] == "running"
        assert state(own_up, kept)[0] == "running"
        own_up.ok("box", "exec", busy, "--", "pkill", "-f", "while")
        wait_until(lambda: state(own_up, busy)[0] == "paused", timeout=15, what="pause once quiet")
        assert state(own_up, kept)[0] == "running"
    finally:
        own_up.rm(busy)
        own_up.rm(kept)


def test_paused_box_is_stopped_and_keeps_its_files(own_up, server):
    _, b = own_up.create("--auto-pause", "1s", "--auto-stop", "1s")
    try:
        own_up.ok("box", "exec", b, "--", "sh", "-c", "echo kept > /home/user/k")
        wait_until(lambda: state(own_up, b)[0] == "stopped", timeout=20, what="auto-stop")
        assert state(own_up, b)[1].startswith("stopped: paused for")
        states = [e["state"] for e in own_up.inspect(b)["events"]]
        assert states[-3:] == ["paused", "stopping", "stopped"], states
        own_up.ok("box", "start", b)
        assert own_up.ok("box", "exec", b, "--", "cat", "/home/user/k") == "kept\n"
    finally:
        own_up.rm(b)


def test_bad_policies(own_up):
    for args, words in [(["--auto-pause", "soon"], "--auto-pause"), (["--auto-stop", "-1s"], "--auto-stop")]:
        rc, _, err = own_up("box", "create", "--name", unique_name("badpol"), *args)
        assert rc != 0 and words in err, err
    assert not [b for b in own_up.ls_json() if b["name"].startswith("badpol")]


def test_stopped_box_is_archived_and_start_brings_it_back(own_up, server):
    _, b = own_up.create("--auto-pause", "1s", "--auto-stop", "1s", "--auto-archive", "1s")
    try:
        own_up.ok("box", "exec", b, "--", "sh", "-c", "echo kept > /home/user/k")
        wait_until(lambda: state(own_up, b)[0] == "archived", timeout=30, what="auto-archive")
        assert state(own_up, b)[1].startswith("archived: stopped for")
        own_up.ok("box", "start", b)
        assert own_up.ok("box", "exec", b, "--", "cat", "/home/user/k") == "kept\n"
    finally:
        own_up.rm(b)


def test_execs_keep_a_box_awake(own_up, server):
    _, b = own_up.create("--auto-pause", "2s")
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            own_up.ok("box", "exec", b, "--", "true")
            time.sleep(0.3)
        # Never paused in between (an exec would have woken it, but the pause would be recorded).
        assert "paused" not in [e["state"] for e in own_up.inspect(b)["events"]]
    finally:
        own_up.rm(b)
