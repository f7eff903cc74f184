"""The front door: version, help, unknown commands."""

import json
import re

import pytest

from upstream_e2e import on_a_terminal


def test_version(up):
    rc, out, err = up("version")
    assert rc == 0, err
    assert re.fullmatch(r"upstream \d+\.\d+\.\d+\n", out), out
    assert err == ""


def test_version_json(up):
    data = json.loads(up.ok("--json", "version"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", data["version"])
    assert up.ok("version").strip() == "upstream " + data["version"]


def test_help_flag_lists_commands(up):
    rc, out, err = up("--help")
    assert rc == 0, err
    for cmd in ("version", "help", "box", "system"):
        assert re.search(rf"^\s+{cmd}\s", out, re.M), f"{cmd} missing from --help:\n{out}"


def test_help_without_topic_lists_commands(up):
    rc, out, err = up("help")
    assert rc == 0, err
    assert "Subcommands:" in out, out
    for cmd in ("version", "box", "system"):
        assert re.search(rf"^\s+{cmd}\s", out, re.M), f"{cmd} missing from `help`:\n{out}"


def test_help_box_lists_box_commands(up):
    rc, out, err = up("help", "box")
    assert rc == 0, err
    for cmd in ("create", "run", "ls", "inspect", "exec", "ps", "logs", "kill", "cp", "stop", "start", "rm"):
        assert re.search(rf"^\s+{cmd}[\s,]", out, re.M), f"{cmd} missing from `help box`:\n{out}"


def test_help_box_exec(up):
    rc, out, err = up("help", "box", "exec")
    assert rc == 0, err
    assert "BOX -- COMMAND" in out
    for opt in ("--interactive", "--tty", "--detach", "--env", "--cwd", "--user", "--timeout", "--shell"):
        assert opt in out, f"{opt} missing from `help box exec`:\n{out}"
    # Help for one command is not the help of another.
    assert "--memory" not in out


def test_help_unknown_topic_fails(up):
    rc, out, err = up("help", "frobnicate")
    assert rc != 0
    assert out == ""
    assert err.startswith("upstream: error:") and "frobnicate" in err


@pytest.mark.parametrize(
    "argv",
    [["frobnicate"], ["box", "frobnicate"], ["system", "frobnicate"], ["box", "create", "--frobnicate"]],
    ids=["top", "box", "system", "option"],
)
def test_unknown_command_fails(up, argv):
    rc, out, err = up(*argv)
    assert rc != 0
    assert out == ""
    assert err.startswith("upstream: error:"), err


@pytest.mark.parametrize("argv,title", [([], "Usage: upstream [OPTIONS] SUBCOMMAND"),
                                         (["box"], "Usage: upstream box [OPTIONS] SUBCOMMAND")],
                         ids=["bare", "box"])
def test_a_group_command_alone_prints_its_usage(up, argv, title):
    rc, out, err = up(*argv)
    assert rc == 0 and err == "", err
    assert title in out and "Subcommands:" in out


@pytest.mark.parametrize("argv,said", [
    (["box", "craete"], 'unknown command "craete" for "upstream box"; did you mean create?'),
    (["bx", "ls"], 'unknown command "bx" for "upstream"; did you mean box?'),
    (["snapshot", "lss"], 'unknown command "lss" for "upstream snapshot"; did you mean ls?'),
    (["box", "ls", "--lable", "a=b"], 'unknown flag "--lable" for "upstream box ls"; did you mean --label?'),
    (["box", "ls", "stray"], 'unexpected argument "stray" for "upstream box ls"'),
    (["run", "--head", "abc", "d.md"], 'invalid value "abc" for --head: expected a whole number'),
    (["run", "--progress", "loud", "d.md"], 'invalid value "loud" for --progress: expected one of auto, plain, none, json'),
    (["box", "create", "-n", "0"], 'invalid value "0" for --count: expected a value from 1 to 1000'),
    (["box", "create", "--label"], "--label needs a value"),
    (["run"], "missing DOCUMENT"),
], ids=["command", "top", "snapshot", "flag", "extra", "number", "choice", "range", "value", "positional"])
def test_usage_errors_name_what_was_wrong_in_our_words(up, argv, said):
    rc, out, err = up(*argv)
    assert rc == 1 and out == "", out
    first, usage = err.splitlines()[:2]
    assert first == "upstream: error: " + said
    assert usage.startswith("Usage: upstream ")
    # The parser library's own wording never reaches the user.
    for theirs in ("Could not convert", "not expected", "is required", "required TEXT", "not in {", "Value "):
        assert theirs not in err, err


def test_help_shows_positionals_and_examples(up):
    out = up.ok("box", "exec", "--help")
    assert "Usage: upstream box exec [OPTIONS] BOX [OPTIONS] -- COMMAND [ARG...]" in out
    assert "Examples:" in out and "upstream box exec py -- python3 -V" in out
    out = up.ok("box", "cp", "--help")
    assert "Usage: upstream box cp [OPTIONS] SOURCE DESTINATION" in out and "Examples:" in out
    assert "Usage: upstream run [OPTIONS] DOCUMENT" in up.ok("run", "--help")


def test_exec_options_after_the_box_are_upstreams(up, mbox):
    rc, out, err = up("box", "exec", mbox, "--timeout", "1s", "-e", "X=late", "--", "sh", "-c", "echo $X; sleep 5")
    assert rc == 124 and out == "late\n", (rc, out, err)
    rc, out, err = up("box", "exec", "-e", "A=1", mbox, "-e", "B=2", "--cwd", "/tmp", "--", "sh", "-c", "echo $A$B $PWD")
    assert rc == 0 and out == "12 /tmp\n", err
    rc, out, err = up("box", "exec", mbox, "--tiemout", "1s", "--", "true")
    assert rc == 125 and "unknown flag \"--tiemout\" for \"upstream box exec\"; did you mean --timeout?" in err
    # Without a flag right after the box, the words before `--` are the command's, `--` too.
    assert up.ok("box", "exec", mbox, "echo", "--", "-x") == "-- -x\n"


def test_the_first_command_says_it_prepares_the_host_image(own_up):
    rc, out = on_a_terminal([own_up.binary, "box", "run", "--rm", "--", "echo", "ran"], own_up.env, timeout=120)
    assert rc == 0, out
    assert "Preparing the host image (there is none yet)" in out, out
    assert re.search(r"The host image is ready \(\d", out), out
    assert out.index("Preparing") < out.index("ran")
    # Once prepared, it is not said again.
    rc, out = on_a_terminal([own_up.binary, "box", "run", "--rm", "--", "echo", "ran"], own_up.env, timeout=120)
    assert rc == 0 and "host image" not in out, out
