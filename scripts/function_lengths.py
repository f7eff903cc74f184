#!/usr/bin/python3
"""Lengths of the functions defined in C++ sources (clang-formatted: a definition starts at the
first column and ends at the first-column brace that closes it), longest first.

  scripts/function_lengths.py [--over N] [--top K] PATH...

Prints "lines  file:line  name" for each function longer than N lines (default 0), and a summary
line per path: functions, the longest, and how many are over 100 lines.
"""
import argparse
import re
import sys
from pathlib import Path

START = re.compile(r"^[A-Za-z_][^;{}]*\)\s*(const)?\s*(noexcept)?\s*(->[^{]*)?\{\s*$")
HEAD = re.compile(r"^[A-Za-z_][^;{}()]*\([^;{}]*$")  # a signature that wraps onto the next lines
SKIP = ("namespace", "struct", "class", "enum", "union", "extern", "template <", "#")


def functions(path):
    lines = path.read_text(errors="replace").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(SKIP) or not line[:1].isalpha():
            i += 1
            continue
        j = i
        sig = line
        while not START.match(sig) and HEAD.match(line) and j + 1 < len(lines) and j - i < 6:
            j += 1
            sig += " " + lines[j].strip()
            if lines[j].rstrip().endswith(";"):
                break
        if not START.match(sig):
            i += 1
            continue
        end = j + 1
        while end < len(lines) and lines[end] != "}":
            end += 1
        name = re.sub(r"\s*\(.*", "", sig).split()[-1] if "(" in sig else sig
        yield end - i + 1, i + 1, name
        i = end + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--over", type=int, default=0)
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("paths", nargs="+")
    a = ap.parse_args()
    status = 0
    for root in a.paths:
        files = [Path(root)] if Path(root).is_file() else sorted(Path(root).rglob("*.cc"))
        found = [(n, f"{f}:{line}", name) for f in files for n, line, name in functions(f)]
        found.sort(reverse=True)
        shown = [x for x in found if x[0] > a.over]
        for n, where, name in shown[: a.top or None]:
            print(f"{n:5d}  {where}  {name}")
        over = sum(1 for x in found if x[0] > 100)
        longest = found[0][0] if found else 0
        print(f"{root}: {len(found)} functions, longest {longest} lines, {over} over 100 lines")
    return status


if __name__ == "__main__":
    sys.exit(main())
