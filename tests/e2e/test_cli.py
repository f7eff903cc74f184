"""The front door: version, help, unknown commands."""

import json
import re

import pytest


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


def test_no_command_fails(up):
    rc, out, err = up()
    assert rc != 0
    assert "upstream: error:" in err
