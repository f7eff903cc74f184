"""Installing packages in a box: the box's system is its own writable layer (as in the official
python images), so pip installs there without touching the host."""

import base64
import hashlib
import zipfile
from pathlib import Path

from upstream_e2e import unique_name

PKG = "upstream_probe_" + unique_name("p").replace("-", "_")


def make_wheel(directory: Path) -> Path:
    """A pure-Python wheel, built by hand (no network, no build backend)."""
    dist = f"{PKG}-1.0"
    files = {
        f"{PKG}.py": b"VALUE = 'installed in the box'\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PKG}\nVersion: 1.0\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{PKG}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def host_has_package():
    return any(Path("/usr/local/lib").glob(f"python3*/dist-packages/{PKG}.py")) or any(
        Path("/usr/lib/python3/dist-packages").glob(f"{PKG}.py")
    )


def test_pip_installs_into_the_box_not_the_host(up, tmp_path):
    wheel = make_wheel(tmp_path)
    box, name = up.create()
    try:
        up.ok("box", "cp", str(wheel), f"{name}:/tmp/")
        # As box root: into the system's site-packages, which is the box's own layer.
        rc, out, err = up("box", "exec", name, "--", "python3", "-m", "pip", "install",
                          "--no-index", "--no-cache-dir", f"/tmp/{wheel.name}", timeout=120)
        assert rc == 0, out + err
        assert "externally-managed" not in err, err
        got = up.ok("box", "exec", name, "--", "python3", "-c",
                    f"import {PKG} as p; print(p.VALUE, p.__file__)")
        assert got.startswith("installed in the box /usr/local/lib/python3"), got
        assert not host_has_package(), "the box's install reached the host"
        # As `user`: pip falls back to a user installation, as on any system it cannot write.
        rc, out, err = up("box", "exec", name, "--user", "user", "--", "python3", "-m", "pip",
                          "install", "--no-index", "--no-cache-dir", "--force-reinstall",
                          f"/tmp/{wheel.name}", timeout=120)
        assert rc == 0, out + err
        assert up.ok("box", "exec", name, "--user", "user", "--", "python3", "-c",
                     f"import {PKG} as p; print(p.__file__)").startswith("/home/user/.local/")
        # A virtual environment works too.
        rc, out, err = up("box", "exec", name, "--", "bash", "-c",
                          f"python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -q --no-index "
                          f"/tmp/{wheel.name} && /tmp/venv/bin/python -c 'import {PKG}'",
                          timeout=180)
        assert rc == 0, out + err
    finally:
        up.rm(box)
    # A new box starts from the image again: nothing the first one installed.
    box2, name2 = up.create()
    try:
        rc, _, _ = up("box", "exec", name2, "--", "python3", "-c", f"import {PKG}")
        assert rc != 0
    finally:
        up.rm(box2)
