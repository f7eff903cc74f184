"""An archive upload is streamed, never held: a small compressed tar that unpacks to 1.5 GB keeps
the server's memory flat, is refused before anything is written when it is more than the box
takes, and an archive that would fail half-way changes nothing."""

import io
import subprocess
import tarfile

import pytest

from api_client import Api
from upstream_e2e import Server, unique_name

BIG = 1536 << 20  # 1.5 GiB


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    d = tmp_path_factory.mktemp("bomb")
    (d / "in").mkdir()
    subprocess.run(["truncate", "-s", str(BIG), str(d / "in" / "big")], check=True)
    out = d / "bomb.tar.gz"
    # GNU tar reads the sparse file as zeros (no --sparse): a plain 1.5 GiB entry, ~1.5 MB gzipped.
    subprocess.run(f"tar -cf - -C {d / 'in'} big | gzip -1 > {out}", shell=True, check=True)
    assert out.stat().st_size < 8 << 20
    return out


def peak_rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_decompression_bomb_keeps_memory_flat(up, bomb):
    s = Server(up, "--no-access-log")
    api = Api(s.url)
    made = []
    try:
        st, small = api("POST", "/v1/boxes", {"name": unique_name("bomb"), "limits": {"disk": "1g"}})
        made.append(small["id"])
        st, large = api("POST", "/v1/boxes", {"name": unique_name("bombok"), "limits": {"disk": "3g"}})
        made.append(large["id"])
        body = bomb.read_bytes()
        # More than the box takes: refused, nothing written.
        st, e = api("PUT", f"/v1/boxes/{small['id']}/files/archive?path=/home/user", body,
                    headers={"Content-Type": "application/gzip"})
        assert st == 429 and "unpacks to more than" in e["message"], e
        st, ls = api("GET", f"/v1/boxes/{small['id']}/files/list?path=/home/user")
        assert "big" not in [x["name"] for x in ls["entries"]]
        # Within what the box takes: streamed into it.
        st, r = api("PUT", f"/v1/boxes/{large['id']}/files/archive?path=/home/user", body,
                    headers={"Content-Type": "application/gzip"})
        assert st == 200, r
        st, info = api("GET", f"/v1/boxes/{large['id']}/files/stat?path=/home/user/big")
        assert info["size"] == BIG
        peak = peak_rss_kb(s.proc.pid)
        assert peak < 300 * 1024, f"the server peaked at {peak // 1024} MiB for a {BIG >> 20} MiB archive"
    finally:
        for i in made:
            api("DELETE", f"/v1/boxes/{i}?force=true")
        s.stop()


def tar_of(*entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("archive,why", [
    (tar_of(("a.txt", "file", b"a"), ("l", "link", "/etc"), ("l/passwd", "file", b"x")), "goes through the symlink 'l'"),
    (tar_of(("f", "file", b"1"), ("f/x", "file", b"2")), "goes through the file 'f'"),
    (tar_of(("a.txt", "file", b"a"), ("h", "hard", "nowhere")), "not to a file before it"),
    (tar_of(("a.txt", "file", b"a"), ("../up", "file", b"x")), "not a plain relative path"),
], ids=["through-symlink", "through-file", "dangling-hardlink", "dotdot"])
def test_bad_archive_changes_nothing(up, box, archive, why):
    dest = "/home/user/" + unique_name("dest")
    up.ok("box", "exec", box, "--", "mkdir", "-p", dest)
    code, out, err = up("box", "cp", "-", f"{box}:{dest}", input=archive, text=False)
    assert code != 0 and why in err.decode(), err
    assert up.ok("box", "exec", box, "--", "ls", "-A", dest) == ""
