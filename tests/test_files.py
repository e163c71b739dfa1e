"""Files holding patron data or secrets: owner-only, and never left half-written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bot.files import write_private


def test_a_private_file_is_owner_only_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "exports" / "patron-7.json"
    write_private(path, '{"patron": 7}\n')
    assert path.read_text(encoding="utf-8") == '{"patron": 7}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_private(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["patron-7.json"]


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a directory where the file should go: the final rename fails
    with pytest.raises(IsADirectoryError):
        write_private(target, "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
