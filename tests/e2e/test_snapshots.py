"""Snapshots: capture (running, paused, stopped), boxes from snapshots and fan-out, chains,
removal and layer sharing, fork, export and import, images, crashes and bad input."""

import glob
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from upstream_e2e import ID_RE, Upstream, on_a_terminal, unique_name, wait_until


def snaps(up):
    return {s["name"]: s for s in up.json("snapshot", "ls")}


def layer_dir(up):
    return Path(up.home) / "pool" / "layers"


def staging_dirs(up):
    return sorted(p.name for p in layer_dir(up).glob(".staging-*"))


def layers_on_disk(up):
    return sorted(p.name for p in layer_dir(up).iterdir() if not p.name.startswith("."))


@pytest.fixture
def cleanup(up):
    """Boxes and snapshots to remove after the test: boxes first, so snapshots are free."""
    boxes, snapshots = [], []
    yield boxes, snapshots
    for b in boxes:
        up("box", "rm", "-f", b)
    for s in reversed(snapshots):
        up("snapshot", "rm", s)


def sh(up, box, script, user=None):
    return up.ok("box", "exec", *(["-u", user] if user else []), box, "--", "bash", "-c", script)


def test_snapshot_running_box_and_boxes_from_it(up, cleanup):
    boxes, snapshots = cleanup
    src_id, src = up.create("-e", "FROM_SNAP=yes", "--user", "user", "--workdir", "/tmp")
    boxes.append(src)
    sh(up, src, "echo hello > /home/user/notes.txt; mkdir -p /opt/tool/bin; "
                "printf '#!/bin/sh\\necho tool ran\\n' > /opt/tool/bin/tool; chmod 755 /opt/tool/bin/tool; "
                "rm -f /etc/motd; dd if=/dev/urandom of=/home/user/blob bs=1M count=8 status=none; "
                "sha256sum /home/user/blob > /home/user/blob.sum", user="root")
    # A process keeps running across the capture (the box is frozen only for a moment).
    up.ok("box", "exec", "--detach", src, "--", "sh", "-c", "while :; do date +%s%N > /tmp/tick; sleep 0.05; done")
    machine_id = sh(up, src, "cat /etc/machine-id")
    name = unique_name("snap")
    assert up.ok("snapshot", "create", src, "--name", name).strip() == name
    snapshots.append(name)
    assert up.inspect(src)["state"] == "running"
    t1 = sh(up, src, "cat /tmp/tick")
    wait_until(lambda: sh(up, src, "cat /tmp/tick") != t1, what="the box to go on after the snapshot")

    j = up.json("snapshot", "inspect", name)
    assert ID_RE.match(j["id"]) and j["name"] == name and j["kind"] == "snapshot"
    assert j["base_image"] == "host" and j["source_box"] == src_id and j["parent"] is None
    assert len(j["layers"]) == 1 and len(j["layers"][0]) == 64
    assert 8 * 2**20 <= j["bytes"] < 9 * 2**20 and j["total_bytes"] == j["bytes"]
    assert j["env"] == {"FROM_SNAP": "yes"} and j["user"] == "user" and j["workdir"] == "/tmp"
    assert name in up.ok("snapshot", "ls")

    child_id, child = up.create("--image", name)
    boxes.append(child)
    cj = up.inspect(child)
    assert cj["image"] == name and cj["user"] == "user" and cj["workdir"] == "/tmp"
    assert cj["env"] == {"FROM_SNAP": "yes"}
    out = sh(up, child, "cat /home/user/notes.txt; /opt/tool/bin/tool; test -e /etc/motd || echo motd-gone; "
                        "sha256sum -c /home/user/blob.sum >/dev/null && echo blob-ok; id -un; pwd; "
                        "echo $FROM_SNAP; hostname; cat /etc/hostname")
    assert out.split("\n")[:-1] == ["hello", "tool ran", "motd-gone", "blob-ok", "user", "/tmp", "yes", child, child]
    # The box's own identity is its own.
    assert sh(up, child, "cat /etc/machine-id") != machine_id
    # The child's writable layer holds only its own changes: the 8 MiB blob is not copied.
    disk = up.inspect(child)["usage"].get("disk_bytes")
    if disk is not None:
        assert disk < 2 * 2**20, disk
    # Writes in the child do not reach the snapshot or the source.
    sh(up, child, "echo changed > /home/user/notes.txt", user="root")
    assert sh(up, src, "cat /home/user/notes.txt") == "hello\n"
    _, other = up.create("--image", name)
    boxes.append(other)
    assert sh(up, other, "cat /home/user/notes.txt") == "hello\n"
    # The child survives a stop and start with its files.
    up.ok("box", "stop", "-t", "1s", child)
    up.ok("box", "start", child)
    assert sh(up, child, "cat /home/user/notes.txt") == "changed\n"


def test_chain_stores_only_changes_and_layers_are_shared(up, cleanup):
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    sh(up, a, "dd if=/dev/urandom of=/home/user/big bs=1M count=4 status=none; echo one > /home/user/1")
    s1 = unique_name("base")
    up.ok("snapshot", "create", a, "--name", s1)
    snapshots.append(s1)
    _, b = up.create("--image", s1)
    boxes.append(b)
    sh(up, b, "echo two > /home/user/2; rm /home/user/1")
    s2 = unique_name("next")
    up.ok("snapshot", "create", b, "--name", s2)
    snapshots.append(s2)
    j1, j2 = up.json("snapshot", "inspect", s1), up.json("snapshot", "inspect", s2)
    assert j2["parent"] == j1["id"] and j2["layers"][1:] == j1["layers"]
    assert j2["bytes"] < 1024, j2  # only "two" and a whiteout
    assert j2["total_bytes"] == j2["bytes"] + j1["bytes"]
    _, c = up.create("--image", s2)
    boxes.append(c)
    assert sh(up, c, "ls /home/user | grep -v '^\\.'; cat /home/user/2") == "2\nbig\ntwo\n"
    # The base is refused while boxes use it, naming them.
    rc, _, err = up("snapshot", "rm", s1)
    assert rc != 0 and "is used by" in err and a not in err and b in err
    assert s1 in snaps(up)
    # Once its boxes are gone, it goes; its layer stays for the snapshot that still lists it.
    up.ok("box", "rm", "-f", b)
    boxes.remove(b)
    up.ok("snapshot", "rm", s1)
    snapshots.remove(s1)
    assert s1 not in snaps(up)
    assert j1["layers"][0] in layers_on_disk(up)
    _, d = up.create("--image", s2)
    boxes.append(d)
    assert sh(up, d, "cat /home/user/2; test -f /home/user/big && echo big") == "two\nbig\n"
    # The last snapshot listing a layer takes it along.
    for x in (c, d):
        up.ok("box", "rm", "-f", x)
        boxes.remove(x)
    up.ok("snapshot", "rm", s2)
    snapshots.remove(s2)
    on_disk = layers_on_disk(up)
    assert j1["layers"][0] not in on_disk and j2["layers"][0] not in on_disk


def test_snapshot_of_paused_and_stopped_boxes(up, cleanup):
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    # Peers lost files changed after a second and third resume: every change stays.
    for i in range(1, 4):
        sh(up, a, f"echo round{i} > /home/user/r{i}")
        up.ok("box", "pause", a)
        up.ok("box", "resume", a)
    sh(up, a, "echo last > /home/user/last")
    up.ok("box", "pause", a)
    s = unique_name("paused")
    up.ok("snapshot", "create", a, "--name", s)
    snapshots.append(s)
    assert up.inspect(a)["state"] == "paused"  # still paused afterwards
    _, b = up.create("--image", s)
    boxes.append(b)
    assert sh(up, b, "cat /home/user/r1 /home/user/r2 /home/user/r3 /home/user/last") == "round1\nround2\nround3\nlast\n"
    up.ok("box", "stop", "-t", "1s", a)
    sh_fail = up("box", "exec", a, "--", "true")
    assert sh_fail[0] != 0
    s2 = unique_name("stopped")
    up.ok("snapshot", "create", a, "--name", s2)
    snapshots.append(s2)
    assert up.inspect(a)["state"] == "stopped"
    _, c = up.create("--image", s2)
    boxes.append(c)
    assert sh(up, c, "cat /home/user/last") == "last\n"


def test_fan_out_and_fork(up, cleanup):
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    sh(up, a, "echo prepared > /home/user/state")
    s = unique_name("fan")
    up.ok("snapshot", "create", a, "--name", s)
    snapshots.append(s)
    prefix = unique_name("fan")
    ids = up.ok("box", "create", "--image", s, "--name", prefix, "--count", "5").split()
    assert len(ids) == 5 and all(ID_RE.match(i) for i in ids)
    names = [f"{prefix}-{i}" for i in range(1, 6)]
    boxes.extend(names)
    for i, n in enumerate(names):
        assert up.inspect(n)["id"] == ids[i]
        sh(up, n, f"echo {i} >> /home/user/state")
    for i, n in enumerate(names):
        assert sh(up, n, "cat /home/user/state") == f"prepared\n{i}\n"
    # A name that would be taken creates nothing.
    rc, _, err = up("box", "create", "--image", s, "--name", prefix, "--count", "6")
    assert rc != 0 and f"{prefix}-1" in err and "already exists" in err
    assert not any(b["name"] == f"{prefix}-6" for b in up.ls_json())

    # Fork: the running box's state, in N new boxes; its snapshot goes with the last of them.
    up.ok("box", "exec", "--detach", a, "--", "sleep", "600")
    sh(up, a, "echo forked-state > /tmp/scratch")
    before = set(snaps(up))
    fprefix = unique_name("fork")
    ids = up.ok("box", "fork", a, "--count", "3", "--name", fprefix, "-l", "team=x").split()
    assert len(ids) == 3
    fnames = [f"{fprefix}-{i}" for i in range(1, 4)]
    boxes.extend(fnames)
    for n in fnames:
        assert sh(up, n, "cat /tmp/scratch /home/user/state") == "forked-state\nprepared\n"
        assert up.inspect(n)["labels"].get("team") == "x"
    new = set(snaps(up)) - before
    assert len(new) == 1
    fork_snap = snaps(up)[new.pop()]
    assert fork_snap["ephemeral"] is True
    for n in fnames[:2]:
        up.ok("box", "rm", "-f", n)
    assert fork_snap["name"] in snaps(up)
    up.ok("box", "rm", "-f", fnames[2])
    assert fork_snap["name"] not in snaps(up)


def test_export_import_to_another_state_directory(up, own_up, cleanup, tmp_path):
    boxes, snapshots = cleanup
    _, a = up.create("-e", "CARRIED=1")
    boxes.append(a)
    sh(up, a, "mkdir -p /home/user/proj/sub; echo data > /home/user/proj/sub/f; ln -s sub/f /home/user/proj/link; "
              "mkfifo /home/user/proj/fifo; rm -f /etc/motd; chmod 600 /home/user/proj/sub/f; "
              "touch -d '2001-02-03 04:05:06.789' /home/user/proj/old; echo x > /usr/local/bin/added")
    s1 = unique_name("exp")
    up.ok("snapshot", "create", a, "--name", s1)
    snapshots.append(s1)
    _, b = up.create("--image", s1)
    boxes.append(b)
    sh(up, b, "echo more > /home/user/proj/more; rm /usr/local/bin/added")
    s2 = unique_name("exp2")
    up.ok("snapshot", "create", b, "--name", s2)
    snapshots.append(s2)
    out = tmp_path / "s2.tar.zst"
    up.ok("snapshot", "export", s2, str(out))
    assert out.stat().st_size > 0
    assert not list(tmp_path.glob("*.upstream-*"))  # written atomically, nothing left behind
    # Into a state directory that has never seen it.
    j = own_up.json("snapshot", "import", str(out))
    assert j["name"] == s2 and j["layers"] == up.json("snapshot", "inspect", s2)["layers"]
    assert j["env"] == {"CARRIED": "1"}
    _, c = own_up.create("--image", s2)
    try:
        got = own_up.ok("box", "exec", c, "--", "bash", "-c",
                        "cd /home/user/proj; cat sub/f more; readlink link; test -p fifo && echo fifo; "
                        "stat -c %a sub/f; stat -c %y old; test -e /etc/motd || echo motd-gone; "
                        "test -e /usr/local/bin/added || echo added-gone; echo $CARRIED")
        assert got.split("\n")[:-1] == ["data", "more", "sub/f", "fifo", "600", "2001-02-03 04:05:06.789000000 +0000",
                                        "motd-gone", "added-gone", "1"]
    finally:
        own_up.rm(c)
    # Importing again needs another name; the same layers are stored once.
    rc, _, err = own_up("snapshot", "import", str(out))
    assert rc != 0 and "already exists" in err
    layers_before = layers_on_disk(own_up)
    own_up.ok("snapshot", "import", str(out), "--name", "again")
    assert layers_on_disk(own_up) == layers_before
    # From stdin too.
    with open(out, "rb") as f:
        r = subprocess.run([own_up.binary, "snapshot", "import", "-", "--name", "piped"], stdin=f,
                           env=own_up.env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for n in ("again", "piped", s2):
        own_up.ok("snapshot", "rm", n)
    assert layers_on_disk(own_up) == []


def test_bad_imports_change_nothing(up, cleanup, tmp_path):
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    sh(up, a, "dd if=/dev/urandom of=/home/user/r bs=1M count=2 status=none")
    s = unique_name("good")
    up.ok("snapshot", "create", a, "--name", s)
    snapshots.append(s)
    good = tmp_path / "good.tar.zst"
    up.ok("snapshot", "export", s, str(good))
    data = good.read_bytes()
    before, layers_before = snaps(up), layers_on_disk(up)
    cases = {
        "truncated": data[: len(data) // 2],
        "tiny": data[:100],
        "empty": b"",
        "not-ours": Path("/etc/os-release").read_bytes(),
    }
    # A tar.zst that is not an export, and one whose layer does not match its digest.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "hello").write_text("hi")
    subprocess.run(["tar", "--zstd", "-cf", str(tmp_path / "plain.tar.zst"), "-C", str(plain), "hello"], check=True)
    cases["tar-not-ours"] = (tmp_path / "plain.tar.zst").read_bytes()
    x = tmp_path / "x"
    x.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", str(good), "-C", str(x)], check=True, capture_output=True)
    victim = next(p for p in x.rglob("r") if p.is_file())
    victim.write_bytes(b"tampered")
    subprocess.run(["tar", "--zstd", "--xattrs", "--xattrs-include=*", "-cf", str(tmp_path / "tampered.tar.zst"),
                    "-C", str(x), "upstream-snapshot.json", "layers"], check=True, capture_output=True)
    cases["tampered"] = (tmp_path / "tampered.tar.zst").read_bytes()
    for what, blob in cases.items():
        f = tmp_path / f"{what}.bin"
        f.write_bytes(blob)
        rc, _, err = up("snapshot", "import", str(f), "--name", unique_name("bad"))
        assert rc != 0, what
        assert "snapshot export" in err or "corrupt" in err, (what, err)
        if what == "tampered":
            assert "corrupt" in err
        assert snaps(up) == before, what
        assert layers_on_disk(up) == layers_before, what
        assert staging_dirs(up) == [], what
    rc, _, err = up("snapshot", "import", str(tmp_path / "missing.tar.zst"))
    assert rc != 0 and "missing.tar.zst" in err


def test_bad_snapshot_input(up, cleanup):
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    s = unique_name("taken")
    up.ok("snapshot", "create", a, "--name", s)
    snapshots.append(s)
    before = snaps(up)
    for args, words in [
        (["snapshot", "create", a, "--name", s], ["already exists"]),
        (["snapshot", "create", a, "--name", "bad name"], ["invalid snapshot name"]),
        (["snapshot", "create", a, "--name", "host"], ["invalid snapshot name"]),
        (["snapshot", "create", "no-such-box-x"], ["no such box"]),
        (["snapshot", "inspect", "no-such-snap-x"], ["no such snapshot"]),
        (["snapshot", "rm", "no-such-snap-x"], ["no such snapshot"]),
        (["snapshot", "export", "no-such-snap-x", "/tmp/never.tar.zst"], ["no such snapshot"]),
        (["box", "create", "--image", "no-such-snap-x"], ["no such snapshot or image", "no-such-snap-x"]),
        (["box", "create", "--image", "x:y"], ["unknown image"]),
        (["box", "create", "--image", s, "--count", "0"], ["count"]),
        (["box", "fork", "no-such-box-x"], ["no such box"]),
        (["image", "inspect", s], ["no such image"]),
    ]:
        rc, _, err = up(*args)
        assert rc != 0, args
        for w in words:
            assert w in err, (args, err)
    assert snaps(up) == before
    assert not os.path.exists("/tmp/never.tar.zst")
    rc, _, err = up("snapshot", "rm", s, "no-such-snap-x")
    assert rc != 0 and s in snaps(up)  # a typo in the list removes nothing


def test_image_build(up, cleanup, tmp_path):
    boxes, snapshots = cleanup
    name = unique_name("img")
    doc = tmp_path / "tools.md"
    doc.write_text("---\nenv:\n  GREETING: hi\n---\n# Tools\n\n```bash\nmkdir -p /opt/tools\n"
                   "echo \"$GREETING from bash\" > /opt/tools/msg\n```\n\n"
                   "```python\nopen('/opt/tools/py', 'w').write('python step\\n')\n```\n")
    rc, out, err = up("image", "build", name, str(doc), "--run", "echo extra > /opt/tools/extra", timeout=120)
    assert rc == 0, err
    snapshots.append(name)
    assert out.strip() == name
    assert "[1/3]" in err and "[3/3]" in err
    j = up.json("image", "inspect", name)
    assert j["kind"] == "image"
    assert name in up.ok("image", "ls")
    assert [s["name"] for s in up.json("image", "ls")].count(name) == 1
    # No build box is left behind.
    assert not [b for b in up.ls_json() if b["name"].startswith("image-build-")]
    _, b = up.create("--image", name)
    boxes.append(b)
    assert sh(up, b, "cat /opt/tools/msg /opt/tools/py /opt/tools/extra") == "hi from bash\npython step\nextra\n"
    # An image as the base of a pipeline document.
    run_doc = tmp_path / "use.md"
    run_doc.write_text(f"---\nimage: {name}\n---\n```bash\ncat /opt/tools/msg\n```\n")
    rc, _, err = up("run", str(run_doc), timeout=120)
    assert rc == 0, err
    assert "hi from bash" in run_doc.read_text()
    # A failing step saves nothing and leaves no box.
    bad = unique_name("img")
    rc, _, err = up("image", "build", bad, "--run", "true", "--run", "exit 3", timeout=120)
    assert rc != 0 and "step 2" in err and "exit code 3" in err and "no image was saved" in err
    assert bad not in snaps(up)
    assert not [b for b in up.ls_json() if b["name"].startswith("image-build-")]
    rc, _, err = up("image", "build", name, "--run", "true")
    assert rc != 0 and "already exists" in err
    rc, _, err = up("image", "build", unique_name("img"))
    assert rc != 0 and "steps" in err
    # In use: refused; then removed.
    rc, _, err = up("image", "rm", name)
    assert rc != 0 and "is used by" in err
    up.ok("box", "rm", "-f", b)
    boxes.remove(b)
    up.ok("image", "rm", name)
    snapshots.remove(name)
    assert name not in snaps(up)


@pytest.mark.parametrize("point", ["snapshot-staged", "snapshot-committed"])
def test_kill_during_snapshot_leaves_nothing_half_done(up, cleanup, point):
    if getattr(up, "remote", False):
        pytest.skip("the fault points are in the engine process (the server, over HTTP)")
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    sh(up, a, "echo precious > /home/user/p; dd if=/dev/urandom of=/home/user/q bs=1M count=1 status=none")
    before, layers_before = snaps(up), layers_on_disk(up)
    name = unique_name("crash")
    env = dict(up.env, UPSTREAM_CRASH_AT=point)
    r = subprocess.run([up.binary, "snapshot", "create", a, "--name", name], env=env, capture_output=True, timeout=60)
    assert r.returncode == -9, r
    # The next command of any kind cleans up; no snapshot was listed, the box is untouched.
    assert snaps(up) == before
    assert layers_on_disk(up) == layers_before
    assert staging_dirs(up) == []
    assert up.inspect(a)["state"] == "running"
    assert sh(up, a, "cat /home/user/p") == "precious\n"
    # And the same snapshot can be taken afterwards.
    up.ok("snapshot", "create", a, "--name", name)
    snapshots.append(name)
    _, b = up.create("--image", name)
    boxes.append(b)
    assert sh(up, b, "cat /home/user/p") == "precious\n"


def test_kill_during_import_leaves_nothing(up, own_up, cleanup, tmp_path):
    if getattr(up, "remote", False):
        pytest.skip("the fault points are in the engine process")
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    sh(up, a, "echo imported > /home/user/i")
    s = unique_name("imp")
    up.ok("snapshot", "create", a, "--name", s)
    snapshots.append(s)
    f = tmp_path / "i.tar.zst"
    up.ok("snapshot", "export", s, str(f))
    r = subprocess.run([own_up.binary, "snapshot", "import", str(f)], env=dict(own_up.env, UPSTREAM_CRASH_AT="import-staged"),
                       capture_output=True, timeout=60)
    assert r.returncode == -9, r
    assert s not in snaps(own_up)
    assert layers_on_disk(own_up) == [] and staging_dirs(own_up) == []
    own_up.ok("snapshot", "import", str(f))
    own_up.ok("snapshot", "rm", s)


def test_archive_and_unarchive(up, cleanup):
    boxes, _ = cleanup
    box_id, b = up.create()
    boxes.append(b)
    sh(up, b, "echo kept > /home/user/k; rm -f /etc/motd; ln -s k /home/user/l; "
              "dd if=/dev/urandom of=/home/user/r bs=1M count=2 status=none; sha256sum /home/user/r > /home/user/r.sum")
    rc, _, err = up("box", "archive", b)
    assert rc != 0 and "only a stopped box can be archived" in err
    up.ok("box", "stop", "-t", "1s", b)
    layers = set(layers_on_disk(up))
    assert up.ok("box", "archive", b).strip() == box_id
    j = up.inspect(b)
    assert j["state"] == "archived" and j["state_reason"] == "archived"
    fs = Path(up.home) / "pool" / "boxes" / box_id / "fs"
    assert not fs.exists()  # the working directory is freed
    new = set(layers_on_disk(up)) - layers
    assert len(new) == 1
    up.ok("box", "archive", b)  # again: nothing to do
    rc, _, err = up("box", "exec", b, "--", "true")
    assert rc != 0 and "archived" in err and "box start" in err
    # A file call unpacks it (it stays stopped).
    rc, out, err = up("box", "cp", f"{b}:/home/user/k", "-", text=False)
    assert rc == 0 and b"kept" in out, err
    assert up.inspect(b)["state"] == "stopped"
    assert fs.exists() and not (set(layers_on_disk(up)) & new)  # the archive layer went
    up.ok("box", "archive", b)
    up.ok("box", "start", b)
    assert up.inspect(b)["state"] == "running"
    states = [(e["state"], e["reason"]) for e in up.inspect(b)["events"]]
    assert ("stopped", "unarchived by start") in states
    assert sh(up, b, "cat /home/user/k; readlink /home/user/l; test -e /etc/motd || echo gone; "
                     "sha256sum -c /home/user/r.sum > /dev/null && echo ok") == "kept\nk\ngone\nok\n"
    # Removing an archived box takes its archive along.
    up.ok("box", "stop", "-t", "1s", b)
    up.ok("box", "archive", b)
    mine = set(layers_on_disk(up)) - layers
    up.ok("box", "rm", b)
    boxes.remove(b)
    assert not (set(layers_on_disk(up)) & mine)


@pytest.mark.parametrize("point", ["archive-committed", "archive-recorded", "unarchive-unpacked"])
def test_kill_during_archive_loses_nothing(up, cleanup, point):
    if getattr(up, "remote", False):
        pytest.skip("the fault points are in the engine process")
    boxes, _ = cleanup
    box_id, b = up.create()
    boxes.append(b)
    sh(up, b, "echo precious > /home/user/p")
    up.ok("box", "stop", "-t", "1s", b)
    layers_before = set(layers_on_disk(up))
    env = dict(up.env, UPSTREAM_CRASH_AT=point)
    if point == "unarchive-unpacked":
        up.ok("box", "archive", b)
        r = subprocess.run([up.binary, "box", "start", b], env=env, capture_output=True, timeout=60)
    else:
        r = subprocess.run([up.binary, "box", "archive", b], env=env, capture_output=True, timeout=60)
    assert r.returncode == -9, r
    # The next command reconciles: the box is stopped with its files, or archived with them in
    # its layer and its working directory gone; no layer is left that nothing lists.
    j = up.inspect(b)
    fs = Path(up.home) / "pool" / "boxes" / box_id / "fs"
    assert j["state"] in ("stopped", "archived"), j["state"]
    if j["state"] == "archived":
        assert not fs.exists()
        assert len(set(layers_on_disk(up)) - layers_before) == 1
    else:
        assert fs.exists()
        assert set(layers_on_disk(up)) == layers_before
    assert staging_dirs(up) == []
    up.ok("box", "start", b)
    assert sh(up, b, "cat /home/user/p") == "precious\n"
    assert set(layers_on_disk(up)) == layers_before


def test_kill_during_fan_out_leaves_only_whole_boxes(up, cleanup):
    if getattr(up, "remote", False):
        pytest.skip("kills the CLI process that runs the engine")
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    sh(up, a, "echo fanned > /home/user/f")
    s = unique_name("killfan")
    up.ok("snapshot", "create", a, "--name", s)
    snapshots.append(s)
    prefix = unique_name("kf")
    # Killed once half the boxes are made, with the other workers' creates under way.
    p = subprocess.run([up.binary, "box", "create", "--image", s, "--name", prefix, "--count", "40"],
                       env=dict(up.env, UPSTREAM_CRASH_AT="fan-out-half"), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
    assert p.returncode == -9
    made = [x for x in up.ls_json() if x["name"].startswith(prefix + "-")]
    boxes.extend(x["name"] for x in made)
    assert 20 <= len(made) < 40
    for x in made:
        assert x["state"] == "running", x
        assert sh(up, x["name"], "cat /home/user/f") == "fanned\n"
    # No volume without a box.
    ids = {x["id"] for x in up.ls_json()}
    vols = {d.name for d in (Path(up.home) / "pool" / "boxes").iterdir()}
    assert vols <= ids, vols - ids


def test_long_snapshot_commands_say_what_they_did_on_a_terminal(up, own_up, cleanup, tmp_path):
    boxes, snapshots = cleanup
    _, a = up.create()
    boxes.append(a)
    sh(up, a, "head -c 8000000 /dev/urandom > /home/user/blob")
    name = unique_name("term")
    rc, out = on_a_terminal([up.binary, "snapshot", "create", a, "--name", name], up.env)
    snapshots.append(name)
    assert rc == 0, out
    assert re.search(rf"snapshot {name} of box {a} \(\d+(\.\d)? MiB of its own, the box frozen \d+ms\) in \d", out), out
    f = tmp_path / "t.tar.zst"
    rc, out = on_a_terminal([up.binary, "snapshot", "export", name, str(f)], up.env)
    assert rc == 0, out
    assert re.search(rf"exported {name} \(\S+ \S+\) to {f} \(\d+(\.\d)? MiB\) in \d", out), out
    # An archive is never written to a terminal, and nothing is left for trying.
    rc, out = on_a_terminal([up.binary, "snapshot", "export", name, "-"], up.env)
    assert rc == 1 and "refusing to write an archive to a terminal" in out, out
    rc, out = on_a_terminal([own_up.binary, "snapshot", "import", str(f)], own_up.env)
    assert rc == 0, out
    assert re.search(rf"imported {name} \(\S+ \S+, \d+ layers?\) from {f} in \d", out), out
    own_up.ok("snapshot", "rm", name)
    # Not on a terminal: only what was asked for (nothing for an export; --json says it all).
    rc, out, err = up("snapshot", "export", name, str(tmp_path / "quiet.tar.zst"))
    assert rc == 0 and out == "" and err == "", (out, err)
    j = up.json("snapshot", "export", name, str(tmp_path / "j.tar.zst"))
    assert j["snapshot"] == name and j["file"] == str(tmp_path / "j.tar.zst")
    assert j["bytes"] == (tmp_path / "j.tar.zst").stat().st_size and j["duration_ms"] >= 0
