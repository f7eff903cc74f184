"""box cp: files and trees in and out, tar streams, stopped boxes, and paths that try to escape."""

import hashlib
import io
import os
import subprocess
import tarfile

import pytest


def make_tree(root):
    """A small local tree: nested dirs, an executable, an empty file, a relative symlink."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.txt").write_text("beta\n")
    (root / "sub" / "deeper" / "c.bin").write_bytes(bytes(range(256)) * 64)
    (root / "empty").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("a.txt")
    return root


def snapshot(root):
    """Everything that matters about a local tree, for comparisons."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", f.read(), os.stat(p).st_mode & 0o777)
    return out


def box_listing(up, box, path):
    out = up.ok("box", "exec", box, "--", "find", path, "-mindepth", "1", "-printf", "%P %y %m %l\\n")
    return sorted(out.splitlines())


# --- files ------------------------------------------------------------------------------------


def test_file_in_and_back_out(up, mbox, tmp_path):
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello from the host\n\x00\xff binary tail")
    src.chmod(0o640)
    rc, out, err = up("box", "cp", src, f"{mbox}:/tmp/")
    assert rc == 0, err
    assert up.ok("box", "exec", mbox, "--", "cat", "/tmp/hello.txt", text=False) == src.read_bytes()
    assert up.ok("box", "exec", mbox, "--", "stat", "-c", "%a", "/tmp/hello.txt") == "640\n"

    # To a new name, then back out to a new local name.
    up.ok("box", "cp", src, f"{mbox}:/tmp/renamed.txt")
    back = tmp_path / "back.txt"
    rc, out, err = up("box", "cp", f"{mbox}:/tmp/renamed.txt", back)
    assert rc == 0, err
    assert back.read_bytes() == src.read_bytes()

    # Into an existing local directory: keeps its name.
    d = tmp_path / "into"
    d.mkdir()
    up.ok("box", "cp", f"{mbox}:/tmp/hello.txt", d)
    assert (d / "hello.txt").read_bytes() == src.read_bytes()


def test_file_written_in_box_comes_out(up, mbox, tmp_path):
    up.ok("box", "exec", mbox, "--", "sh", "-c", "seq 1 100000 > /home/user/numbers.txt")
    up.ok("box", "cp", f"{mbox}:/home/user/numbers.txt", tmp_path / "n.txt")
    assert (tmp_path / "n.txt").read_text() == "".join(f"{i}\n" for i in range(1, 100001))
    # A relative box path is relative to the box's working directory.
    up.ok("box", "cp", f"{mbox}:numbers.txt", tmp_path / "rel.txt")
    assert (tmp_path / "rel.txt").read_text() == (tmp_path / "n.txt").read_text()


def test_large_file_round_trip(up, mbox, tmp_path):
    data = os.urandom(4 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    up.ok("box", "cp", src, f"{mbox}:/tmp/big.bin", timeout=60)
    want = hashlib.sha256(data).hexdigest()
    assert up.ok("box", "exec", mbox, "--", "sha256sum", "/tmp/big.bin").split()[0] == want
    up.ok("box", "cp", f"{mbox}:/tmp/big.bin", tmp_path / "big.out", timeout=60)
    assert (tmp_path / "big.out").read_bytes() == data


def test_missing_box_file_fails(up, mbox, tmp_path):
    rc, out, err = up("box", "cp", f"{mbox}:/tmp/does-not-exist", tmp_path / "x")
    assert rc != 0
    assert err.startswith("upstream: error:")
    assert not (tmp_path / "x").exists()


def test_missing_local_file_fails(up, mbox, tmp_path):
    rc, out, err = up("box", "cp", tmp_path / "does-not-exist", f"{mbox}:/tmp/")
    assert rc != 0
    assert err.startswith("upstream: error:")


# --- trees ------------------------------------------------------------------------------------


def test_tree_in_and_back_out(up, mbox, tmp_path):
    tree = make_tree(tmp_path / "proj")
    up.ok("box", "exec", mbox, "--", "mkdir", "-p", "/tmp/trees")
    rc, out, err = up("box", "cp", tree, f"{mbox}:/tmp/trees/")
    assert rc == 0, err
    assert box_listing(up, mbox, "/tmp/trees/proj") == sorted([
        "a.txt f 644 ", "empty f 644 ", "run.sh f 755 ", "link l 777 a.txt",
        "sub d 755 ", "sub/b.txt f 644 ", "sub/deeper d 755 ", "sub/deeper/c.bin f 644 ",
    ])
    assert up.ok("box", "exec", mbox, "--", "cat", "/tmp/trees/proj/sub/b.txt") == "beta\n"
    assert up.ok("box", "exec", mbox, "--", "/tmp/trees/proj/run.sh") == "ran\n"
    assert up.ok("box", "exec", mbox, "--", "cat", "/tmp/trees/proj/link") == "alpha\n"

    # Out to a new local directory: same tree.
    rc, out, err = up("box", "cp", f"{mbox}:/tmp/trees/proj", tmp_path / "back")
    assert rc == 0, err
    assert snapshot(tmp_path / "back") == snapshot(tree)

    # Out into an existing directory: lands inside it under its own name.
    (tmp_path / "existing").mkdir()
    up.ok("box", "cp", f"{mbox}:/tmp/trees/proj", tmp_path / "existing")
    assert snapshot(tmp_path / "existing" / "proj") == snapshot(tree)


def test_tree_to_new_box_name(up, mbox, tmp_path):
    tree = make_tree(tmp_path / "src")
    up.ok("box", "cp", tree, f"{mbox}:/tmp/newname")
    assert up.ok("box", "exec", mbox, "--", "cat", "/tmp/newname/a.txt") == "alpha\n"


# --- tar streams ------------------------------------------------------------------------------


def test_tar_stream_out(up, mbox):
    up.ok("box", "exec", mbox, "--", "sh", "-c",
          "rm -rf /tmp/tarout && mkdir -p /tmp/tarout/d && echo one > /tmp/tarout/one "
          "&& echo two > /tmp/tarout/d/two && ln -s one /tmp/tarout/ln && chmod 750 /tmp/tarout/d")
    rc, out, err = up("box", "cp", f"{mbox}:/tmp/tarout", "-", text=False)
    assert rc == 0, err
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        members = {m.name.rstrip("/"): m for m in tf.getmembers()}
        assert set(members) == {"tarout", "tarout/one", "tarout/d", "tarout/d/two", "tarout/ln"}
        assert members["tarout"].isdir() and members["tarout/d"].isdir()
        assert members["tarout/d"].mode & 0o777 == 0o750
        assert members["tarout/ln"].issym() and members["tarout/ln"].linkname == "one"
        assert tf.extractfile("tarout/one").read() == b"one\n"
        assert tf.extractfile("tarout/d/two").read() == b"two\n"


def test_tar_stream_out_single_file(up, mbox):
    up.ok("box", "exec", mbox, "--", "sh", "-c", "printf 'solo' > /tmp/solo.txt")
    rc, out, err = up("box", "cp", f"{mbox}:/tmp/solo.txt", "-", text=False)
    assert rc == 0, err
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        assert tf.getnames() == ["solo.txt"]
        assert tf.extractfile("solo.txt").read() == b"solo"


def test_tar_stream_out_utf8_names(up, mbox):
    up.ok("box", "exec", mbox, "--", "sh", "-c",
          "rm -rf /tmp/top && mkdir /tmp/top && echo u > /tmp/top/\u00fc.txt && echo c > /tmp/top/caf\u00e9")
    rc, out, err = up("box", "cp", f"{mbox}:/tmp/top", "-", text=False)
    assert rc == 0, err
    with tarfile.open(fileobj=io.BytesIO(out)) as tf:
        assert sorted(tf.getnames()) == ["top", "top/caf\u00e9", "top/\u00fc.txt"]


def test_tar_stream_out_is_read_silently_by_gnu_tar(up, mbox, tmp_path):
    """ASCII, long and UTF-8 names: GNU tar lists and unpacks the stream without one warning."""
    long_name = "l" * 150
    up.ok("box", "exec", mbox, "--", "sh", "-c",
          "rm -rf /tmp/gt && mkdir -p /tmp/gt/sub && echo a > /tmp/gt/plain.txt "
          f"&& echo l > /tmp/gt/sub/{long_name} && echo u > /tmp/gt/\u00fcber.txt")
    rc, out, err = up("box", "cp", f"{mbox}:/tmp/gt", "-", text=False)
    assert rc == 0, err
    env = dict(os.environ, LC_ALL="C.UTF-8")
    listed = subprocess.run(["tar", "-tf", "-"], input=out, capture_output=True, env=env)
    assert listed.returncode == 0 and listed.stderr == b"", listed.stderr
    names = sorted(n.rstrip("/") for n in listed.stdout.decode().splitlines())
    assert names == ["gt", "gt/plain.txt", "gt/sub", f"gt/sub/{long_name}", "gt/\u00fcber.txt"]
    dest = tmp_path / "x"
    dest.mkdir()
    unpacked = subprocess.run(["tar", "-xf", "-", "-C", str(dest)], input=out, capture_output=True, env=env)
    assert unpacked.returncode == 0 and unpacked.stderr == b"", unpacked.stderr
    assert (dest / "gt" / "\u00fcber.txt").read_text() == "u\n"
    assert (dest / "gt" / "sub" / long_name).read_text() == "l\n"


def test_utf8_names_copy_out_to_directory(up, mbox, tmp_path):
    up.ok("box", "exec", mbox, "--", "sh", "-c",
          "rm -rf /tmp/uni && mkdir /tmp/uni && echo u > /tmp/uni/\u00fc.txt")
    up.ok("box", "cp", f"{mbox}:/tmp/uni", tmp_path / "uni")
    assert (tmp_path / "uni" / "\u00fc.txt").read_text() == "u\n"


def build_tar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, payload, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = payload
                tf.addfile(ti)
            else:
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT],
                         ids=["pax", "gnu", "ustar"])
def test_tar_stream_in(up, mbox, fmt):
    long_name = "n" * 90 + "/" + "m" * 90 if fmt != tarfile.USTAR_FORMAT else "short/name"
    data = build_tar([
        ("pkg", "dir", None, 0o755),
        ("pkg/" + long_name.split("/")[0], "dir", None, 0o755),
        ("pkg/readme.txt", "file", b"read me\n", 0o644),
        ("pkg/bin", "dir", None, 0o755),
        ("pkg/bin/tool", "file", b"#!/bin/sh\necho tool\n", 0o755),
        ("pkg/latest", "sym", "readme.txt", 0o777),
        (f"pkg/{long_name}", "file", b"long\n", 0o600),
    ], fmt)
    dest = f"/tmp/tarin-{fmt}"
    up.ok("box", "exec", mbox, "--", "mkdir", "-p", dest)
    rc, out, err = up("box", "cp", "-", f"{mbox}:{dest}", input=data, text=False)
    assert rc == 0, err
    assert up.ok("box", "exec", mbox, "--", "cat", f"{dest}/pkg/readme.txt") == "read me\n"
    assert up.ok("box", "exec", mbox, "--", f"{dest}/pkg/bin/tool") == "tool\n"
    assert up.ok("box", "exec", mbox, "--", "readlink", f"{dest}/pkg/latest") == "readme.txt\n"
    assert up.ok("box", "exec", mbox, "--", "stat", "-c", "%a", f"{dest}/pkg/{long_name}") == "600\n"
    assert up.ok("box", "exec", mbox, "--", "cat", f"{dest}/pkg/{long_name}") == "long\n"


def test_tar_stream_in_creates_missing_parents(up, mbox):
    data = build_tar([("a/b/c.txt", "file", b"deep\n", 0o644)])
    up.ok("box", "exec", mbox, "--", "mkdir", "-p", "/tmp/noparents")
    rc, out, err = up("box", "cp", "-", f"{mbox}:/tmp/noparents", input=data, text=False)
    assert rc == 0, err
    assert up.ok("box", "exec", mbox, "--", "cat", "/tmp/noparents/a/b/c.txt") == "deep\n"


@pytest.mark.parametrize("bad", ["../escape.txt", "/abs.txt", "ok/../../escape.txt"])
def test_tar_stream_in_refuses_escaping_entries(up, mbox, bad):
    up.ok("box", "exec", mbox, "--", "mkdir", "-p", "/tmp/tarbad/inner")
    data = build_tar([("fine.txt", "file", b"fine\n", 0o644), (bad, "file", b"bad\n", 0o644)])
    rc, out, err = up("box", "cp", "-", f"{mbox}:/tmp/tarbad/inner", input=data, text=False)
    assert rc != 0
    assert err.startswith(b"upstream: error:")
    listing = up.ok("box", "exec", mbox, "--", "sh", "-c",
                    "find /tmp/tarbad; ls /escape.txt /abs.txt /tmp/escape.txt 2>/dev/null; true")
    assert "escape.txt" not in listing and "abs.txt" not in listing and "fine.txt" not in listing, listing


def test_tar_stream_in_rejects_garbage(up, mbox):
    rc, out, err = up("box", "cp", "-", f"{mbox}:/tmp", input=b"this is not a tar archive" * 100, text=False)
    assert rc != 0
    assert err.decode().startswith("upstream: error:")


# --- stopped boxes ----------------------------------------------------------------------------


def test_cp_on_stopped_box_keeps_it_stopped(up, tmp_path):
    box_id, name = up.create()
    try:
        up.ok("box", "exec", name, "--", "sh", "-c", "echo before-stop > /home/user/inside.txt")
        up.ok("box", "stop", "-t", "1s", name)
        src = tmp_path / "while-stopped.txt"
        src.write_text("copied while stopped\n")

        rc, out, err = up("box", "cp", src, f"{name}:/home/user/")
        assert rc == 0, err
        assert up.inspect(name)["state"] == "stopped"

        rc, out, err = up("box", "cp", f"{name}:/home/user/inside.txt", tmp_path / "out.txt")
        assert rc == 0, err
        assert (tmp_path / "out.txt").read_text() == "before-stop\n"
        assert up.inspect(name)["state"] == "stopped"

        rc, out, err = up("box", "cp", f"{name}:/home/user", "-", text=False)
        assert rc == 0, err
        with tarfile.open(fileobj=io.BytesIO(out)) as tf:
            assert tf.extractfile("user/while-stopped.txt").read() == b"copied while stopped\n"
        j = up.inspect(name)
        assert j["state"] == "stopped"
        assert name not in [x["name"] for x in up.json("box", "ls", "--state", "running")]

        up.ok("box", "start", name)
        assert up.ok("box", "exec", name, "--", "cat", "/home/user/while-stopped.txt") == "copied while stopped\n"
    finally:
        up.rm(box_id)


# --- escapes ----------------------------------------------------------------------------------


def test_dotdot_path_stays_in_the_box(up, mbox, tmp_path):
    # A marker only the box's /etc/shadow has.
    up.ok("box", "exec", mbox, "--", "sh", "-c", "grep -q '^e2emarker:' /etc/shadow || "
          "echo 'e2emarker:*:19000:0:99999:7:::' >> /etc/shadow")
    box_shadow = up.ok("box", "exec", mbox, "--", "cat", "/etc/shadow")
    for src in ("../../../../etc/shadow", "/../../../etc/shadow", "/tmp/../../../etc/./shadow"):
        out = tmp_path / "shadow"
        rc, _, err = up("box", "cp", f"{mbox}:{src}", out)
        assert rc == 0, err
        text = out.read_text()
        assert text == box_shadow
        assert "e2emarker:" in text
        assert "$6$" not in text and "$y$" not in text and "$5$" not in text and "$1$" not in text
        for line in text.splitlines():
            assert line.split(":")[1] in ("*", "!", "!*", ""), line
        out.unlink()


def test_dotdot_path_cannot_reach_host_files(up, mbox, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret\n")
    out = tmp_path / "stolen"
    rc, _, err = up("box", "cp", f"{mbox}:../../../..{secret}", out)
    assert rc != 0
    assert not out.exists()
    # Nor by writing: a copy in through .. lands inside the box (or fails), never on the host.
    src = tmp_path / "payload.txt"
    src.write_text("payload\n")
    target = tmp_path / "written-by-box.txt"
    up("box", "cp", src, f"{mbox}:../../../..{target}")
    assert not target.exists()


def test_symlink_to_host_path_comes_out_as_symlink(up, mbox, tmp_path):
    host_target = tmp_path / "host-target"
    host_target.mkdir()
    (host_target / "keep").write_text("original\n")
    before = snapshot(host_target)

    up.ok("box", "exec", mbox, "--", "sh", "-c",
          f"rm -rf /tmp/dir && mkdir -p /tmp/dir && ln -s {host_target} /tmp/dir/esc "
          f"&& ln -s {host_target}/keep /tmp/dir/keeplink && echo data > /tmp/dir/zz")
    local = tmp_path / "localdir"
    rc, out, err = up("box", "cp", f"{mbox}:/tmp/dir", local)
    assert rc == 0, err
    assert os.path.islink(local / "esc") and os.readlink(local / "esc") == str(host_target)
    assert os.path.islink(local / "keeplink") and os.readlink(local / "keeplink") == f"{host_target}/keep"
    assert (local / "zz").read_text() == "data\n"
    assert snapshot(host_target) == before

    # The box swaps the symlink for a real directory with a file in it and the tree is copied
    # out again into the same place: nothing may go through the symlink left on the host.
    up.ok("box", "exec", mbox, "--", "sh", "-c",
          "rm /tmp/dir/esc /tmp/dir/keeplink && mkdir /tmp/dir/esc && echo evil > /tmp/dir/esc/keep "
          "&& echo evil > /tmp/dir/esc/new && echo evil > /tmp/dir/keeplink")
    up("box", "cp", f"{mbox}:/tmp/dir", local)  # into the existing directory
    assert snapshot(host_target) == before
    assert (host_target / "keep").read_text() == "original\n"


def test_symlink_itself_is_copied_not_followed(up, mbox, tmp_path):
    host_file = tmp_path / "host-file.txt"
    host_file.write_text("host\n")
    up.ok("box", "exec", mbox, "--", "sh", "-c", f"ln -sfn {host_file} /tmp/lonely-link")
    out = tmp_path / "copied-link"
    rc, _, err = up("box", "cp", f"{mbox}:/tmp/lonely-link", out)
    assert rc == 0, err
    assert os.path.islink(out) and os.readlink(out) == str(host_file)
    assert host_file.read_text() == "host\n"


def test_copy_in_through_box_symlink_stays_in_box(up, mbox, tmp_path):
    host_target = tmp_path / "host-dir"
    host_target.mkdir()
    up.ok("box", "exec", mbox, "--", "sh", "-c", f"mkdir -p /tmp/ln && ln -sfn {host_target} /tmp/ln/out")
    src = tmp_path / "payload.txt"
    src.write_text("payload\n")
    up("box", "cp", src, f"{mbox}:/tmp/ln/out/payload.txt")
    up("box", "cp", src, f"{mbox}:/tmp/ln/out/")
    assert list(host_target.iterdir()) == []
    # And reading through it finds the box's (non-existent) path, not the host's.
    (host_target / "secret").write_text("secret\n")
    rc, _, _ = up("box", "cp", f"{mbox}:/tmp/ln/out/secret", tmp_path / "got")
    assert rc != 0 and not (tmp_path / "got").exists()


def test_setuid_bits_dropped_on_copy_out(up, mbox, tmp_path):
    up.ok("box", "exec", mbox, "--", "sh", "-c", "cp /bin/true /tmp/suid && chmod 4755 /tmp/suid")
    up.ok("box", "cp", f"{mbox}:/tmp/suid", tmp_path / "suid")
    mode = os.stat(tmp_path / "suid").st_mode
    assert mode & 0o6000 == 0, oct(mode)


def test_cp_user_option(up, mbox, tmp_path):
    up.ok("box", "exec", mbox, "--", "sh", "-c", "echo root-only > /root/private && chmod 600 /root/private")
    rc, _, err = up("box", "cp", "-u", "user", f"{mbox}:/root/private", tmp_path / "p")
    assert rc != 0
    assert not (tmp_path / "p").exists()
    up.ok("box", "cp", f"{mbox}:/root/private", tmp_path / "p")
    assert (tmp_path / "p").read_text() == "root-only\n"
    # Files copied in as user belong to user.
    src = tmp_path / "mine.txt"
    src.write_text("mine\n")
    up.ok("box", "cp", "-u", "user", src, f"{mbox}:/home/user/")
    assert up.ok("box", "exec", mbox, "--", "stat", "-c", "%U", "/home/user/mine.txt") == "user\n"



def owners(up, box, path):
    out = up.ok("box", "exec", box, "--", "find", path, "-printf", "%P %u:%g\\n")
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


def test_what_a_copy_creates_belongs_to_the_destinations_owner(up, mbox, tmp_path):
    """As root (the default), copies and writes into /home/user are user's, as if user had made
    them; into root's directories they stay root's; a replaced file keeps its owner."""
    tree = make_tree(tmp_path / "proj")
    up.ok("box", "cp", tree, f"{mbox}:/home/user/")
    got = owners(up, mbox, "/home/user/proj")
    assert got and set(got.values()) == {"user:user"}, got
    # A tar stream in, and the parents it makes.
    tar = subprocess.run(["tar", "-C", str(tmp_path), "-cf", "-", "proj"], capture_output=True, check=True).stdout
    up("box", "cp", "-", f"{mbox}:/home/user/t/deeper", input=tar, text=False, check=True)
    got = owners(up, mbox, "/home/user/t")
    assert "deeper/proj/a.txt" in got and set(got.values()) == {"user:user"}, got
    # Into a root-owned directory: root's.
    up.ok("box", "cp", tree, f"{mbox}:/opt/")
    assert set(owners(up, mbox, "/opt/proj").values()) == {"root:root"}
    # A file replaced keeps its owner, whoever owns the directory.
    up.ok("box", "exec", mbox, "--", "sh", "-c", "echo old > /home/user/kept && chown daemon:daemon /home/user/kept")
    up.ok("box", "cp", tree / "a.txt", f"{mbox}:/home/user/kept")
    assert up.ok("box", "exec", mbox, "--", "stat", "-c", "%U:%G", "/home/user/kept") == "daemon:daemon\n"
    # Modes stay as they were given.
    assert up.ok("box", "exec", mbox, "--", "stat", "-c", "%a", "/home/user/proj/run.sh") == "755\n"
