#!/usr/bin/env python3
"""Installs the visitor-style fonts of `assets/fonts/visitor.json` into `assets/fonts/visitor` (issue 31).

    python3 scripts/install_fonts.py            # or: make fonts

The fonts come from Debian 12's packages (the machine's package registry; about 60 MB of packages, 22 MB of fonts):
the script installs the packages that are missing (root or sudo), copies each listed face and its package's copyright
file, and checks every face against its sha256, so the generator draws the same images on every machine. Idempotent:
faces already in place with the right digest are left alone. Uses only the standard library (it runs before any
virtual environment exists).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "assets" / "fonts" / "visitor.json"
TARGET = ROOT / "assets" / "fonts" / "visitor"
SYSTEM_FONTS = Path("/usr/share/fonts")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def missing_faces(fonts: list[dict]) -> list[dict]:
    return [f for f in fonts if not (TARGET / f["file"]).is_file() or digest(TARGET / f["file"]) != f["sha256"]]


def install_packages(packages: list[str]) -> None:
    if not shutil.which("apt-get"):
        sys.exit(f"the visitor fonts come from Debian packages and this machine has no apt-get: install {packages}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], check=True, env=env
    )


def main() -> int:
    fonts = json.loads(MANIFEST.read_text())["fonts"]
    todo = missing_faces(fonts)
    if not todo:
        print(f"visitor fonts already installed: {len(fonts)} faces in {TARGET.relative_to(ROOT)}")
        return 0
    absent = sorted({f["package"] for f in todo if not (SYSTEM_FONTS / f["source"]).is_file()})
    if absent:
        install_packages(absent)
    (TARGET / "licences").mkdir(parents=True, exist_ok=True)
    wrong = []
    for face in todo:
        source = SYSTEM_FONTS / face["source"]
        if digest(source) != face["sha256"]:
            wrong.append(f"{source} ({face['package']} {face['version']} expected)")
            continue
        shutil.copyfile(source, TARGET / face["file"])
        copyright_file = Path("/usr/share/doc") / face["package"] / "copyright"
        if copyright_file.is_file():
            shutil.copyfile(copyright_file, TARGET / "licences" / f"{face['package']}.txt")
    if wrong:
        sys.exit("these fonts differ from the ones the generator was written for:\n  " + "\n  ".join(wrong))
    print(f"visitor fonts installed: {len(fonts)} faces in {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
