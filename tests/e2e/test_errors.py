"""Bad input: one line on stderr starting with `upstream: error:`, a non-zero exit, nothing changed."""

import pytest

from upstream_e2e import unique_name

MISSING = "no-such-box-e2e"

# Each case: (id, argv builder, required exit code or None for "any non-zero").
# The builder gets the name of an existing running box and a local file path.
CASES = [
    ("exec-unknown-box", lambda b, f: ["box", "exec", MISSING, "--", "true"], 125),
    ("inspect-unknown-box", lambda b, f: ["box", "inspect", MISSING], None),
    ("stop-unknown-box", lambda b, f: ["box", "stop", MISSING], None),
    ("start-unknown-box", lambda b, f: ["box", "start", MISSING], None),
    ("rm-unknown-box", lambda b, f: ["box", "rm", MISSING], None),
    ("rm-f-unknown-box", lambda b, f: ["box", "rm", "-f", MISSING], None),
    ("logs-unknown-box", lambda b, f: ["box", "logs", MISSING], None),
    ("ps-unknown-box", lambda b, f: ["box", "ps", MISSING], None),
    ("cp-out-unknown-box", lambda b, f: ["box", "cp", f"{MISSING}:/etc/hostname", f + ".out"], None),
    ("cp-in-unknown-box", lambda b, f: ["box", "cp", f, f"{MISSING}:/tmp/"], None),
    ("image-missing-dir", lambda b, f: ["box", "create", "--image", "dir:/nonexistent"], None),
    ("image-not-a-tar", lambda b, f: ["box", "create", "--image", "tar:/etc/hostname"], None),
    ("image-unknown-kind", lambda b, f: ["box", "create", "--image", "foo"], None),
    ("memory-bad-unit", lambda b, f: ["box", "create", "--memory", "12q"], None),
    ("pids-not-a-number", lambda b, f: ["box", "create", "--pids", "many"], None),
    ("cpus-zero", lambda b, f: ["box", "create", "--cpus", "0"], None),
    ("create-env-no-equals", lambda b, f: ["box", "create", "-e", "NOEQUALS"], None),
    ("label-bad-key", lambda b, f: ["box", "create", "--label", "-bad=x"], None),
    ("name-with-space", lambda b, f: ["box", "create", "--name", "bad name"], None),
    ("name-duplicate", lambda b, f: ["box", "create", "--name", b], None),
    ("run-bad-image", lambda b, f: ["box", "run", "--rm", "--image", "foo", "--", "true"], 125),
    ("run-bad-memory", lambda b, f: ["box", "run", "--rm", "--memory", "12q", "--", "true"], 125),
    ("exec-timeout-soon", lambda b, f: ["box", "exec", "--timeout", "soon", b, "--", "true"], 125),
    ("exec-env-no-equals", lambda b, f: ["box", "exec", "-e", "NOEQUALS", "--cwd", "/", b, "--", "true"], 125),
    ("kill-unknown-exec", lambda b, f: ["box", "kill", b, "99999"], None),
    ("logs-unknown-exec", lambda b, f: ["box", "logs", b, "99999"], None),
    ("stop-bad-time", lambda b, f: ["box", "stop", "-t", "soon", b], None),
    ("cp-both-box", lambda b, f: ["box", "cp", f"{b}:/etc/hostname", f"{b}:/tmp/x"], None),
    ("cp-neither-box", lambda b, f: ["box", "cp", f, f + ".copy"], None),
]


@pytest.fixture(scope="module")
def errbox(up):
    _, name = up.create(name=unique_name("err"))
    up.ok("box", "exec", name, "--", "true")  # some history to compare
    try:
        yield name
    finally:
        up.rm(name)


def world(up, box):
    """What must not change: the box list and the existing box's exec history."""
    return up.ls_json(), up.json("box", "logs", box)


@pytest.mark.parametrize("argv_for,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_changes_nothing(up, errbox, tmp_path, argv_for, code):
    local = tmp_path / "local.txt"
    local.write_text("local\n")
    argv = argv_for(errbox, str(local))
    before = world(up, errbox)
    rc, out, err = up(*argv, timeout=60)
    assert rc != 0, f"{argv} succeeded: {out!r}"
    if code is not None:
        assert rc == code, (rc, err)
    assert out == ""
    assert err.startswith("upstream: error:"), err
    assert err.endswith("\n") and err.count("\n") == 1, f"not exactly one line: {err!r}"
    assert world(up, errbox) == before
    # Nothing was written locally either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.txt"]


def test_duplicate_name_names_the_box(up, errbox):
    rc, _, err = up("box", "create", "--name", errbox)
    assert rc != 0 and errbox in err


def test_unknown_box_error_names_it(up):
    rc, _, err = up("box", "inspect", MISSING)
    assert rc != 0 and MISSING in err


def test_failed_create_frees_the_name(up):
    name = unique_name("retry")
    rc, _, _ = up("box", "create", "--name", name, "--image", "dir:/nonexistent")
    assert rc != 0
    rc, _, _ = up("box", "create", "--name", name, "--memory", "12q")
    assert rc != 0
    box_id, _ = up.create(name=name)
    up.rm(box_id)


def test_unknown_user_is_an_exec_error(up, errbox):
    before = up.ls_json()
    rc, out, err = up("box", "exec", "--user", "nobody-e2e", errbox, "--", "true")
    assert rc == 125
    assert out == ""
    assert err.startswith("upstream: error:") and err.count("\n") == 1, err
    assert up.ls_json() == before
