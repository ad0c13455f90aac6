#!/usr/bin/env python3
"""Check the plugin zip as plugins.qgis.org checks an upload; exit 1 on any finding.

    python3 scripts/check_publish.py [--zip dist/tailings_mapper-X.zip] [--bin DIR]

Builds the zip (scripts/package_plugin.py) unless ``--zip`` names one, unpacks it, and runs:

- the upload validator's rules: one top folder named as a Python identifier, __init__.py,
  metadata.txt with the required fields, LICENSE, no .pyc, no __pycache__/__MACOSX/.git
  folder, no path outside the folder, at most 25 MB;
- the security scan's file rules: no executable or library files (.exe .dll .so .dylib .bat .cmd
  .sh .ps1), no executable .py file, no hidden file;
- Bandit with the tests the repository enables (every severity and confidence, over the whole
  unpacked zip, training/ included; ``# nosec`` honoured as there);
- detect-secrets over every file (``scan --all-files``), metadata.txt left out and the public-IP
  plugin off, as there.

The rule set is plugins.qgis.org's (qgis/QGIS-Plugins-Website: plugins/security_scanner.py and
the rule table management/commands/data/bandit_rules.json, whose enabled rules are every Bandit
test but B109, B404, B410 and B411).  ``--bin`` is the folder with the bandit and detect-secrets
commands (scripts/check_publish.sh makes a virtual environment with them).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess  # nosec B404 - runs the scanners (a development script, not in the zip)
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import package_plugin  # noqa: E402

BANDIT_TESTS = ("B101 B102 B103 B104 B105 B106 B107 B108 B110 B111 B112 B113 B201 B202 B301 B302 B303 B304 B305 "
                "B306 B307 B308 B310 B311 B312 B313 B314 B315 B316 B317 B318 B319 B320 B321 B323 B324 B401 B402 "
                "B403 B405 B406 B407 B408 B409 B412 B413 B501 B502 B503 B504 B505 B506 B507 B508 B509 B601 B602 "
                "B603 B604 B605 B606 B607 B608 B609 B610 B611 B612 B613 B614 B615 B701 B702 B703 B704").split()
SECRETS_OFF = ("IPPublicDetector",)
SUSPICIOUS = (".exe", ".dll", ".so", ".dylib", ".bat", ".sh", ".ps1", ".cmd")
REQUIRED = ("name", "description", "version", "qgisMinimumVersion", "author", "email", "about", "tracker",
            "repository")


def zip_findings(zpath: str):
    """The upload validator's and the file scan's findings for a zip: ``[(file, rule, message)]``."""
    out = []
    if os.path.getsize(zpath) > package_plugin.MAX_ZIP_BYTES:
        out.append((zpath, "SIZE", "over %d MB" % (package_plugin.MAX_ZIP_BYTES // 1_000_000)))
    with zipfile.ZipFile(zpath) as z:
        names = z.namelist()
        tops = {n.split("/")[0] for n in names}
        top = names[0].split("/")[0] if names and "/" in names[0] else ""
        if len(tops) != 1 or not top.isidentifier() or not re.match(r"^[A-Za-z][A-Za-z0-9-_]+$", top):
            out.append((zpath, "FOLDER", "one top folder named as a Python identifier expected, found %s"
                        % sorted(tops)))
        for must in ("__init__.py", "metadata.txt", "LICENSE"):
            if "%s/%s" % (top, must) not in names:
                out.append((zpath, "MISSING", "%s/%s" % (top, must)))
        for info in z.infolist():
            n = info.filename
            parts = n.rstrip("/").split("/")
            if ".." in n or n.startswith("/"):
                out.append((n, "PATH", "path information"))
            if ".pyc" in n:
                out.append((n, "PYC", "compiled Python"))
            if {"__MACOSX", ".git", "__pycache__"} & set(parts):
                out.append((n, "FOLDER", "forbidden folder"))
            if n.lower().endswith(SUSPICIOUS):
                out.append((n, "FILE_SUSPICIOUS", "executable or library file"))
            if parts[-1].startswith("."):
                out.append((n, "FILE_HIDDEN", "hidden file"))
            if n.endswith(".py") and (info.external_attr >> 16) & 0o111:
                out.append((n, "FILE_EXECUTABLE", "executable Python file"))
        if "%s/metadata.txt" % top in names:
            import configparser
            cp = configparser.ConfigParser(interpolation=None)
            cp.optionxform = str
            cp.read_string(z.read("%s/metadata.txt" % top).decode("utf-8"))
            general = cp["general"] if cp.has_section("general") else {}
            for key in REQUIRED:
                if not general.get(key, "").strip():
                    out.append(("metadata.txt", "METADATA", "no %s" % key))
    return out


def bandit_findings(folder: str, bandit: str):
    r = subprocess.run([bandit, "-r", folder, "-f", "json", "-q", "-t", ",".join(BANDIT_TESTS)],  # nosec B603 - scanner
                       capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise SystemExit("bandit gave no report (exit %d): %s" % (r.returncode, r.stderr[-2000:]))
    if report.get("errors"):
        raise SystemExit("bandit could not read: %s" % report["errors"])
    return [(os.path.relpath(i["filename"], folder) + ":%d" % i["line_number"], i["test_id"],
             "%s/%s %s" % (i["issue_severity"], i["issue_confidence"], i["issue_text"])) for i in report["results"]]


def secrets_findings(folder: str, detect_secrets: str):
    cmd = [detect_secrets, "scan", "--all-files", "--exclude-files", r"metadata\.txt"]
    for plugin in SECRETS_OFF:
        cmd += ["--disable-plugin", plugin]
    r = subprocess.run(cmd + ["."], cwd=folder, capture_output=True, text=True, timeout=600)  # nosec B603 - scanner
    if r.returncode != 0:
        raise SystemExit("detect-secrets failed (exit %d): %s" % (r.returncode, r.stderr[-2000:]))
    return [("%s:%d" % (path, s["line_number"]), "secret", s["type"])
            for path, found in json.loads(r.stdout)["results"].items() for s in found]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zip", help="check this zip instead of building one")
    ap.add_argument("--bin", default=os.path.dirname(sys.executable),
                    help="the folder of the bandit and detect-secrets commands (default: this Python's)")
    a = ap.parse_args(argv)
    tools = {t: os.path.join(os.path.abspath(a.bin), t) for t in ("bandit", "detect-secrets")}
    for t, path in tools.items():
        if not os.path.isfile(path):
            raise SystemExit("%s is not in %s: run scripts/check_publish.sh (it installs it)" % (t, a.bin))
    with tempfile.TemporaryDirectory(prefix="tm-publish-") as tmp:
        zpath = a.zip or package_plugin.build(os.path.join(tmp, "dist"))
        unpacked = os.path.join(tmp, "unpacked")
        with zipfile.ZipFile(zpath) as z:
            z.extractall(unpacked)
        found = {"repository": zip_findings(zpath),
                 "bandit": bandit_findings(unpacked, tools["bandit"]),
                 "detect-secrets": secrets_findings(unpacked, tools["detect-secrets"])}
    for kind, items in found.items():
        for where, rule, message in items:
            print("%s: %s %s %s" % (kind, where, rule, message))
    print("%s: %s" % (os.path.basename(zpath), ", ".join("%s %d" % (k, len(v)) for k, v in found.items())))
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
