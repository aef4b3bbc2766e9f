#!/usr/bin/env python3
"""The README's layout table names every folder of the tree, two levels deep:
each folder with tracked files is a row of its own (`folder/`), or a deeper
row names something inside it (`proto/analytics/v1/` covers `proto/`).

Usage: readme_layout.py SOURCE_DIR
"""
import os
import re
import subprocess
import sys


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.split()
    dirs = set()
    for f in files:
        parts = f.split("/")[:-1]
        for depth in (1, 2):
            if len(parts) >= depth and not parts[0].startswith("."):
                dirs.add("/".join(parts[:depth]) + "/")
    with open(os.path.join(root, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    m = re.search(r"^### Layout\n(.*?)(?=^#)", readme, re.M | re.S)
    if not m:
        print("README.md has no ### Layout section")
        return 1
    rows = [line for line in m.group(1).splitlines() if line.startswith("| `")]
    named = set()
    for row in rows:
        first_cell = row.split("|")[1]
        named.update(re.findall(r"`([^`]+/)`", first_cell))
    missing = sorted(d for d in dirs if not any(n == d or n.startswith(d) for n in named))
    if missing:
        print("folders missing from README.md's layout table:", " ".join(missing))
        return 1
    print("layout table: %d folders covered" % len(dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
