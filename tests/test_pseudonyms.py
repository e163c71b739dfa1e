"""The installation's secret and the keyed pseudonyms made with it: created once, owner-only, shared by
every process, never overwritten, and a pseudonym that cannot be reversed by trying ids."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.pseudonyms import KEY_FILE, fingerprint, installation_key, load_key
from bot.settings import PROJECT_ROOT, SettingsError, get_settings, load_settings

KEY_A = "a" * 32 + "-first-installation"
KEY_B = "b" * 32 + "-second-installation"


def use_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("PATRONBOT_SECRET_KEY", key)
    get_settings.cache_clear()


def key_file(tmp_path: Path) -> Path:
    return tmp_path / "var" / KEY_FILE


def test_the_key_file_is_created_once_owner_only_and_reused(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    assert not path.exists()
    key = load_key(settings=load_settings())
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32
    contents = path.read_bytes()
    assert load_key(settings=load_settings()) == key
    assert path.read_bytes() == contents
    assert [entry.name for entry in path.parent.iterdir()] == [KEY_FILE]  # no temporary file left


def test_an_existing_key_file_is_read_never_overwritten(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("c" * 64 + "\n", encoding="utf-8")
    assert load_key(settings=load_settings()) == b"c" * 64
    assert path.read_text(encoding="utf-8") == "c" * 64 + "\n"


@pytest.mark.parametrize("contents", ["", "\n", "0123456789abcdef\n"])
def test_an_empty_or_short_key_file_is_refused_in_one_line_and_kept(tmp_path: Path, contents: str) -> None:
    path = key_file(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(contents, encoding="utf-8")
    with pytest.raises(SettingsError) as error:
        load_key(settings=load_settings())
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message
    assert "0123456789" not in message  # the file's contents are not repeated
    assert path.read_text(encoding="utf-8") == contents


def _child_fingerprints(count: int) -> list[str]:
    """`count` processes started at once, each printing the pseudonym of the same id."""
    script = "from bot.pseudonyms import fingerprint; print(fingerprint('rest:alice'))"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    children = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    outputs = [child.communicate(timeout=120)[0].strip() for child in children]
    assert [child.returncode for child in children] == [0] * count
    return outputs


def test_processes_starting_at_once_create_one_key_and_share_it(tmp_path: Path) -> None:
    printed = _child_fingerprints(4)
    assert len(set(printed)) == 1
    contents = key_file(tmp_path).read_bytes()
    # A later process, and this one, read the same file.
    assert _child_fingerprints(1) == printed[:1]
    assert fingerprint("rest:alice") == printed[0]
    assert key_file(tmp_path).read_bytes() == contents


def test_the_setting_is_used_instead_of_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_key(monkeypatch, KEY_A)
    assert installation_key() == KEY_A.encode("utf-8")
    assert not key_file(tmp_path).exists()


def test_the_key_file_and_the_setting_give_the_same_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An installation moving to several instances copies its key file into PATRONBOT_SECRET_KEY."""
    from_file = fingerprint("rest:alice")
    use_key(monkeypatch, key_file(tmp_path).read_text(encoding="utf-8").strip())
    assert fingerprint("rest:alice") == from_file


def test_the_log_pseudonym_depends_on_the_key_and_is_not_a_plain_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_key(monkeypatch, KEY_A)
    first = fingerprint("rest:alice")
    assert first == fingerprint("rest:alice")
    assert first != fingerprint("rest:bob")
    assert len(first) == 12
    assert "alice" not in first
    assert first != hashlib.sha256(b"rest:alice").hexdigest()[:12]
    use_key(monkeypatch, KEY_B)
    assert fingerprint("rest:alice") != first
