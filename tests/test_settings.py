"""The settings object: defaults, environment, .env, and one-line errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import PROJECT_ROOT, SettingsError, load_settings


def test_defaults_are_embedded_sqlite_and_standard_ports(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.rasa_port == 5005
    assert settings.action_port == 5055
    assert settings.crm_database_url == f"sqlite:///{tmp_path / 'var' / 'patronbot.db'}"
    assert settings.rasa_tracker_url.startswith("sqlite:///")
    assert settings.lock_store_url == "memory"
    assert settings.path(settings.model_path) == PROJECT_ROOT / "models" / "patronbot.tar.gz"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRONBOT_RASA_PORT", "6005")
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", "postgresql://lib:secret@db.example:5432/crm")
    settings = load_settings()
    assert settings.rasa_port == 6005
    assert settings.crm_database_url == "postgresql://lib:secret@db.example:5432/crm"
    assert settings.webhook_url == "http://127.0.0.1:6005/webhooks/rest/webhook"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PATRONBOT_ACTION_PORT=7055\n", encoding="utf-8")
    assert load_settings().action_port == 7055


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PATRONBOT_RASA_PORT", "abc", "PATRONBOT_RASA_PORT: value is not a valid integer"),
        ("PATRONBOT_RASA_PORT", "70000", "PATRONBOT_RASA_PORT: must be a port number from 1 to 65535"),
        ("PATRONBOT_DATABASE_URL", "mysql://x", "PATRONBOT_DATABASE_URL: must be a sqlite://"),
        ("PATRONBOT_LOCK_STORE_URL", "memcached://x", "PATRONBOT_LOCK_STORE_URL: must be 'memory'"),
        ("PATRONBOT_LOG_LEVEL", "LOUD", "PATRONBOT_LOG_LEVEL: unexpected value"),
        ("PATRONBOT_MAX_MESSAGE_CHARS", "0", "PATRONBOT_MAX_MESSAGE_CHARS: must be at least 1"),
    ],
)
def test_invalid_setting_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_password_in_a_bad_url_is_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", "mysql://librarian:hunter2@db/crm")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "hunter2" not in str(error.value)
    assert "librarian:***@db" in str(error.value)


SECRET = "s3cret-installation-key-0123456789abcdef"


def test_a_short_secret_key_is_refused_in_one_line_without_repeating_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATRONBOT_SECRET_KEY", "s3cret-but-short")
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("PATRONBOT_SECRET_KEY: must be at least 32 characters")
    assert "\n" not in message
    assert "s3cret" not in message


def test_the_secret_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRONBOT_SECRET_KEY", SECRET)
    settings = load_settings()
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    monkeypatch.setenv("PATRONBOT_RASA_PORT", "abc")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert SECRET not in str(error.value)


def test_the_secret_key_is_not_in_any_command_output(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    patronbot = str(Path(sys.executable).with_name("patronbot"))
    short = "s3cret-but-short"
    runs = [
        (["--version"], SECRET),
        (["run", "--no-train"], short),  # refused: the key is too short
        (["patron", "erase", "rest:ghost", "--yes"], SECRET),  # refused: no such patron
    ]
    for args, key in runs:
        result = subprocess.run(
            [patronbot, *args],
            env=os.environ
            | {"PATRONBOT_SECRET_KEY": key, "PATRONBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'crm.db'}"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (result.returncode == 0) == (args == ["--version"]), (args, result.stderr)
        if key == short:
            assert "PATRONBOT_SECRET_KEY: must be at least 32 characters" in result.stderr
        assert key not in result.stdout + result.stderr, args
        assert "s3cret" not in result.stdout + result.stderr, args


def test_readme_documents_every_setting() -> None:
    from bot.settings import Settings

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.__fields__ if f"`PATRONBOT_{name.upper()}`" not in readme]
    assert missing == []


def test_training_fingerprint_follows_training_data_not_other_code(tmp_path: Path) -> None:
    import shutil

    from bot.runtime.training import training_fingerprint

    root = tmp_path / "project"
    root.mkdir()
    for name in ("config.yml", "domain.yml"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    (root / "nlu").mkdir()
    (root / "nlu" / "components.py").write_text("# pipeline code\n", encoding="utf-8")
    (root / "nlu" / "greet.yml").write_text("nlu: []\n", encoding="utf-8")
    before = training_fingerprint(root)
    (root / "nlu" / "evaluation.py").write_text("# not part of the model\n", encoding="utf-8")
    assert training_fingerprint(root) == before
    (root / "nlu" / "components.py").write_text("# pipeline code, changed\n", encoding="utf-8")
    changed = training_fingerprint(root)
    assert changed != before
    (root / "nlu" / "greet.yml").write_text("nlu: [x]\n", encoding="utf-8")
    assert training_fingerprint(root) != changed
    # The intent classifier's code is the model's too: a change to it trains again.
    for name in ("intent_classifier.py", "intent_model.py", "features.py"):
        before = training_fingerprint(root)
        (root / "nlu" / name).write_text("# the classifier's code\n", encoding="utf-8")
        assert training_fingerprint(root) != before, name
