#!/usr/bin/env python3
"""Checks that no source file includes a header of a layer above its own.

The layers are the `layers` block of docs/architecture.md: `folder: what it may include`. Every
#include "X/..." in src/FOLDER/ must name FOLDER itself or a folder of its line. Exits 1 listing
each upward include (file:line), 0 otherwise.

  scripts/check_layers.py [ROOT]   (ROOT: the checkout; default: this one)
"""
import re
import sys
from pathlib import Path


def layers(root):
    text = (root / "docs" / "architecture.md").read_text()
    m = re.search(r"```layers\n(.*?)```", text, re.S)
    if not m:
        sys.exit("check_layers: docs/architecture.md has no ```layers block")
    allowed = {}
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        folder, _, deps = line.partition(":")
        allowed[folder.strip()] = set(deps.split())
    return allowed


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    allowed = layers(root)
    bad = []
    for path in sorted((root / "src").rglob("*")):
        if path.suffix not in (".cc", ".h"):
            continue
        folder = path.relative_to(root / "src").parts[0]
        if folder not in allowed:
            bad.append(f"src/{folder}: a folder the layers block of docs/architecture.md does not name")
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = re.match(r'\s*#\s*include\s+"([a-z_]+)/', line)
            if m and m.group(1) != folder and m.group(1) not in allowed[folder]:
                bad.append(f"{path.relative_to(root)}:{n}: {folder} includes {m.group(1)}/, "
                           f"which is not below it")
    for b in sorted(set(bad)):
        print(b)
    if bad:
        print(f"check_layers: {len(set(bad))} include(s) against the layer order", file=sys.stderr)
        return 1
    print("layers: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
