"""The layer check (scripts/check_layers.py): it passes on this tree, and fails, naming the file,
line and layers, as soon as a lower folder includes a higher one."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "check_layers.py"


def run(root):
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True)


def copy_tree(tmp_path):
    shutil.copytree(REPO / "src", tmp_path / "src")
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "docs" / "architecture.md", tmp_path / "docs" / "architecture.md")
    return tmp_path


def test_this_tree_keeps_the_order():
    r = run(REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_upward_include_fails(tmp_path):
    root = copy_tree(tmp_path)
    target = root / "src" / "model" / "box.cc"
    lines = target.read_text().splitlines()
    lines.insert(3, '#include "engine/engine.h"')
    target.write_text("\n".join(lines) + "\n")
    r = run(root)
    assert r.returncode == 1
    assert "src/model/box.cc:4: model includes engine/" in r.stdout


def test_a_sibling_include_fails_too(tmp_path):
    root = copy_tree(tmp_path)
    target = root / "src" / "netd" / "dns.cc"
    target.write_text('#include "storage/layout.h"\n' + target.read_text())
    r = run(root)
    assert r.returncode == 1 and "src/netd/dns.cc:1: netd includes storage/" in r.stdout


def test_a_folder_outside_the_order_fails(tmp_path):
    root = copy_tree(tmp_path)
    (root / "src" / "extra").mkdir()
    (root / "src" / "extra" / "x.cc").write_text("int x;\n")
    r = run(root)
    assert r.returncode == 1 and "src/extra" in r.stdout
