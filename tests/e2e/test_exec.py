"""box exec (foreground and background), ps, logs, kill."""

import re
import time

import pytest

from upstream_e2e import on_a_terminal, wait_until


# --- foreground -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 7, 42, 255])
def test_exit_code_is_the_commands(up, mbox, code):
    rc, out, err = up("box", "exec", mbox, "--", "sh", "-c", f"exit {code}")
    assert rc == code
    assert out == "" and err == ""


def test_killed_by_signal_exits_128_plus_signal(up, mbox):
    rc, _, _ = up("box", "exec", mbox, "--", "sh", "-c", "kill -9 $$")
    assert rc == 137


def test_stdout_and_stderr_on_their_own_streams(up, mbox):
    rc, out, err = up("box", "exec", mbox, "--", "sh", "-c",
                      "echo to-out; echo to-err >&2; echo more-out; echo more-err >&2; exit 3")
    assert rc == 3
    assert out == "to-out\nmore-out\n"
    assert err == "to-err\nmore-err\n"


def test_arguments_are_passed_verbatim(up, mbox):
    args = ["a b", "", "$HOME", "'quoted'", "semi;colon", "star*", "ünï"]
    rc, out, err = up("box", "exec", mbox, "--", "printf", "[%s]\\n", *args)
    assert rc == 0, err
    assert out == "".join(f"[{a}]\n" for a in args)


def test_large_output(up, mbox):
    rc, out, err = up("box", "exec", mbox, "--", "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x", text=False)
    assert rc == 0, err
    assert out == b"x" * 3000000


def test_shell_option_runs_bash(up, mbox):
    rc, out, err = up("box", "exec", "-c", "echo $0; echo ${BASH_VERSION:+bash}; cd /tmp && pwd; exit 4", mbox)
    assert rc == 4, err
    assert out.splitlines() == ["/bin/bash", "bash", "/tmp"]


def test_shell_option_after_box_as_in_readme(up, mbox):
    rc, out, err = up("box", "exec", mbox, "-c", "cd /tmp && echo $((6*7)) && pwd")
    assert rc == 0, err
    assert out == "42\n/tmp\n"


def test_env_option(up, mbox):
    # -e followed by another option, so the value list ends before BOX.
    rc, out, err = up("box", "exec", "-e", "K=V", "-e", "SPACED=a b", "--cwd", "/", mbox, "--",
                      "sh", "-c", 'echo "$K|$SPACED"')
    assert rc == 0, err
    assert out == "V|a b\n"
    rc, out, err = up("box", "exec", "-e", "K=first", "--", mbox, "printenv", "K")
    assert (rc, out) == (0, "first\n"), err


def test_env_option_before_box(up, mbox):
    rc, out, err = up("box", "exec", "-e", "K=V", mbox, "--", "printenv", "K")
    assert rc == 0, err
    assert out == "V\n"


def test_exec_env_overrides_box_env(up):
    box_id, name = up.create("--env", "A=box", "--env", "B=box")
    try:
        rc, out, err = up("box", "exec", "-e", "A=exec", "--cwd", "/", name, "--", "sh", "-c", 'echo "$A $B"')
        assert (rc, out) == (0, "exec box\n"), err
    finally:
        up.rm(box_id)


def test_cwd_option_and_default_workdir(up, mbox):
    assert up.ok("box", "exec", "--cwd", "/tmp", mbox, "--", "pwd") == "/tmp\n"
    assert up.ok("box", "exec", mbox, "--", "pwd") == "/home/user\n"


def test_user_option_and_default_root(up, mbox):
    assert up.ok("box", "exec", mbox, "--", "id", "-u") == "0\n"
    assert up.ok("box", "exec", "--user", "user", mbox, "--", "id", "-u") == "1000\n"
    assert up.ok("box", "exec", "--user", "user", mbox, "--", "id", "-un") == "user\n"
    assert up.ok("box", "exec", "--user", "1234:4321", mbox, "--", "id", "-u") == "1234\n"
    assert up.ok("box", "exec", "--user", "1234:4321", mbox, "--", "id", "-g") == "4321\n"
    # An ordinary user really is unprivileged.
    rc, out, err = up("box", "exec", "--user", "user", mbox, "--", "sh", "-c", "echo x > /etc/hacked")
    assert rc != 0
    assert "Permission denied" in err


def test_interactive_streams_stdin(up, mbox):
    rc, out, err = up("box", "exec", "-i", mbox, "--", "tr", "a-z", "A-Z", input="hello stdin\nsecond line\n")
    assert rc == 0, err
    assert out == "HELLO STDIN\nSECOND LINE\n"


def test_interactive_binary_stdin(up, mbox):
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    rc, out, err = up("box", "exec", "-i", mbox, "--", "cat", input=data, text=False)
    assert rc == 0, err
    assert out == data


def test_without_interactive_stdin_is_not_read(up, mbox):
    rc, out, err = up("box", "exec", mbox, "--", "sh", "-c", "cat; echo end", input="should not arrive\n")
    assert rc == 0, err
    assert out == "end\n"


def test_timeout_kills_command(up, mbox):
    t0 = time.monotonic()
    rc, out, err = up("box", "exec", "--timeout", "1s", mbox, "--", "sleep", "30", timeout=20)
    elapsed = time.monotonic() - t0
    assert rc == 124
    assert elapsed < 10, elapsed
    assert err.startswith("upstream:") and "timed out" in err, err


def test_timeout_kills_daemonised_children(up, mbox):
    rc, out, err = up("box", "exec", "--timeout", "1s", mbox, "--", "sh", "-c",
                      "setsid sleep 731 & sleep 732", timeout=20)
    assert rc == 124
    procs = up.ok("box", "exec", mbox, "--", "ps", "-eo", "args")
    assert "sleep 731" not in procs and "sleep 732" not in procs, procs


def test_fast_command_within_timeout(up, mbox):
    rc, out, err = up("box", "exec", "--timeout", "10s", mbox, "--", "echo", "quick")
    assert (rc, out) == (0, "quick\n"), err


def test_missing_command_exits_127(up, mbox):
    rc, out, err = up("box", "exec", mbox, "--", "no-such-command-xyz")
    assert rc == 127
    assert out == ""
    assert "no-such-command-xyz" in err


def test_not_executable_exits_126(up, mbox):
    up.ok("box", "exec", mbox, "--", "sh", "-c", "echo 'echo hi' > /tmp/noexec.sh && chmod 644 /tmp/noexec.sh")
    rc, out, err = up("box", "exec", mbox, "--", "/tmp/noexec.sh")
    assert rc == 126, (rc, out, err)


def test_no_command_is_an_error(up, mbox):
    rc, out, err = up("box", "exec", mbox)
    assert rc == 125
    assert err.startswith("upstream: error:")


# --- background, ps, logs, kill ---------------------------------------------------------------


def exec_numbers(up, box, running_only=True):
    cmd = ["box", "ps", box] if running_only else ["box", "ps", "-a", box]
    return {x["exec"] for x in up.json(*cmd)}


def test_background_exec_ps_logs(up, mbox):
    rc, out, err = up("box", "exec", "-d", mbox, "--", "sh", "-c",
                      "echo bg-out; echo bg-err >&2; sleep 1.5; echo bg-late; exit 5")
    assert rc == 0, err
    assert re.fullmatch(r"\d+\n", out), out
    n = int(out)

    # ps lists it while it runs, with its command.
    assert n in exec_numbers(up, mbox)
    table = up.ok("box", "ps", mbox)
    row = [line for line in table.splitlines() if line.split()[0] == str(n)]
    assert row and "background" in row[0] and "running" in row[0] and "bg-late" in row[0], table

    # Output so far.
    wait_until(lambda: "bg-out" in up.ok("box", "logs", mbox, n), what="background output")

    # Follow until it ends: everything, in order, and no sooner than the exec ends.
    rc, out, err = up("box", "logs", mbox, n, "-f", timeout=30)
    assert rc == 0, err
    assert out == "bg-out\nbg-late\n"
    assert err == "bg-err\n"
    assert n not in exec_numbers(up, mbox)

    # Only one stream at a time.
    rc, out, err = up("box", "logs", mbox, n, "--stderr")
    assert (rc, out, err) == (0, "", "bg-err\n")
    rc, out, err = up("box", "logs", mbox, n, "--stdout")
    assert (rc, out, err) == (0, "bg-out\nbg-late\n", "")

    # History: this exec with its result.
    hist = up.ok("box", "logs", mbox)
    assert hist.splitlines()[0].split()[:3] == ["EXEC", "RESULT", "DURATION"]
    row = [line for line in hist.splitlines() if line.split()[0] == str(n)]
    assert row and "exit 5" in row[0], hist
    rec = [x for x in up.json("box", "logs", mbox) if x["exec"] == n]
    assert rec and rec[0]["exit_code"] == 5 and rec[0]["background"] is True and rec[0]["state"] == "exited"
    detail = up.json("box", "logs", mbox, n)
    assert detail["stdout_tail"] == "bg-out\nbg-late\n" and detail["stderr_tail"] == "bg-err\n"
    assert n in exec_numbers(up, mbox, running_only=False)


def test_logs_follow_waits_for_the_end(up, mbox):
    n = int(up.ok("box", "exec", "-d", mbox, "--", "sh", "-c",
                  "for i in 1 2 3; do echo line$i; sleep 0.5; done"))
    t0 = time.monotonic()
    rc, out, err = up("box", "logs", mbox, n, "-f", timeout=30)
    elapsed = time.monotonic() - t0
    assert rc == 0, err
    assert out == "line1\nline2\nline3\n"
    assert elapsed > 0.5, elapsed


def test_foreground_execs_are_in_history(up, mbox):
    up.ok("box", "exec", mbox, "--", "sh", "-c", "echo history-marker-123; exit 0")
    hist = up.json("box", "logs", mbox)
    mine = [x for x in hist if "history-marker-123" in " ".join(x["argv"])]
    assert mine and mine[-1]["exit_code"] == 0 and mine[-1]["background"] is False
    n = mine[-1]["exec"]
    assert up.ok("box", "logs", mbox, n) == "history-marker-123\n"


def test_kill_kills_the_whole_tree(up, mbox):
    n = int(up.ok("box", "exec", "-d", mbox, "--", "sh", "-c",
                  "setsid sh -c 'sleep 611' & sleep 612 & echo started; wait"))

    def both_running():
        procs = up.ok("box", "exec", mbox, "--", "ps", "-eo", "args")
        return "sleep 611" in procs and "sleep 612" in procs

    wait_until(both_running, what="the exec's processes")
    rc, out, err = up("box", "kill", mbox, n)
    assert rc == 0, err

    def all_gone():
        procs = up.ok("box", "exec", mbox, "--", "ps", "-eo", "args")
        return "sleep 611" not in procs and "sleep 612" not in procs

    wait_until(all_gone, timeout=5, what="every process of the killed exec to die")
    wait_until(lambda: n not in exec_numbers(up, mbox), timeout=5, what="ps to drop the exec")
    rec = [x for x in up.json("box", "logs", mbox) if x["exec"] == n][0]
    assert rec["state"] != "running" and rec["signal"] == 9, rec
    # Killing it again: it is not running any more.
    rc, out, err = up("box", "kill", mbox, n)
    assert rc != 0 and err.startswith("upstream: error:")


def test_kill_with_signal_term(up, mbox):
    n = int(up.ok("box", "exec", "-d", mbox, "--", "sh", "-c",
                  "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done"))
    wait_until(lambda: "ready" in up.ok("box", "logs", mbox, n), what="the trap to be set")
    up.ok("box", "kill", "-s", "TERM", mbox, n)
    rc, out, err = up("box", "logs", mbox, n, "-f", timeout=20)
    assert out == "ready\ngot-term\n"
    rec = [x for x in up.json("box", "logs", mbox) if x["exec"] == n][0]
    assert rec["exit_code"] == 9, rec


def test_background_exec_survives_the_cli(up, mbox):
    n = int(up.ok("box", "exec", "-d", mbox, "--", "sh", "-c", "sleep 0.5; echo finished > /tmp/bg-done"))
    wait_until(lambda: n not in exec_numbers(up, mbox), timeout=10, what="the background exec to end")
    assert up.ok("box", "exec", mbox, "--", "cat", "/tmp/bg-done") == "finished\n"


def test_tty_option_gives_a_terminal(up, mbox):
    """-t runs the command on a terminal; the local side is a pty made here."""
    if up.remote:
        # Over HTTP there are no terminals yet: a clear error, and nothing runs.
        rc, out, err = up("box", "exec", "-t", mbox, "--", "touch", "/tmp/tty-ran")
        assert rc == 125 and "terminals (-t) are not available over HTTP" in err
        assert up("box", "exec", mbox, "--", "test", "-e", "/tmp/tty-ran")[0] == 1
        return
    rc, text = on_a_terminal(
        [up.binary, "box", "exec", "-t", mbox, "--", "sh", "-c", "tty; test -t 0 && echo stdin-is-tty"],
        up.env)
    assert rc == 0, text
    assert "/dev/pts/" in text and "stdin-is-tty" in text, text
    # Without -t there is no terminal.
    rc, out, err = up("box", "exec", mbox, "--", "sh", "-c", "test -t 1 && echo tty || echo no-tty")
    assert out == "no-tty\n"
