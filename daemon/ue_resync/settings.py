"""Settings, from the environment, a `.env` file and command-line flags, in that order of rising
precedence. Every field is `UE_RESYNC_<NAME>`; a plain `DATABASE_URL` is accepted, and so are a
Laravel `.env`'s `DB_URL` (Laravel 11) or `DB_HOST`, `DB_PORT`, `DB_DATABASE`, `DB_USERNAME` and
`DB_PASSWORD`, when its `DB_CONNECTION` is `pgsql`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ue_resync.durations import parse_duration


class SettingsError(ValueError):
    """A setting is missing or wrong; the message is one line meant for an operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UE_RESYNC_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("UE_RESYNC_DATABASE_URL", "DATABASE_URL")
    )
    # A Laravel application's .env, for operators pointing --env-file at it: DB_URL (Laravel 11's
    # `url` of a connection) wins over the DB_* parts, as in Laravel.
    db_connection: str | None = Field(default=None, validation_alias="DB_CONNECTION")
    db_url: SecretStr | None = Field(default=None, validation_alias="DB_URL")
    db_host: str | None = Field(default=None, validation_alias="DB_HOST")
    db_port: int | None = Field(default=None, validation_alias="DB_PORT", ge=1, le=65535)
    db_database: str | None = Field(default=None, validation_alias="DB_DATABASE")
    db_username: str | None = Field(default=None, validation_alias="DB_USERNAME")
    db_password: SecretStr | None = Field(default=None, validation_alias="DB_PASSWORD")
    # A direct connection for LISTEN alone, when the database URL goes through a transaction
    # pooler (a LISTEN made through one hears nothing); every query still uses the database URL.
    listen_url: SecretStr | None = None
    # The mapping file `ue-resync migrate` reads (daemon/ue_resync/mapping.py); default: the
    # mapping installed in the database, else ue-resync's own names.
    mapping: Path | None = None

    # `ue-resync work`, with the old `queue:work` defaults.
    sleep: float = Field(default=3.0, gt=0, le=3600, description="poll fallback, seconds")
    # The poll interval while the daemon's LISTEN hears nothing (its self-check failed).
    sleep_without_wakeups: float = Field(default=0.5, ge=0.05, le=60)
    tries: int = Field(default=3, ge=1, le=100, description="attempts, not retries")
    backoff: Annotated[tuple[float, ...], NoDecode] = Field(default=(30.0, 60.0, 120.0))
    max_time: float = Field(default=3600.0, ge=0, description="exit 0 after, 0 = never")
    timeout: float = Field(default=5.0, gt=0, le=3600, description="per resync transaction")
    concurrency: int = Field(default=2, ge=1, le=64, description="resync transactions at once")
    batch_size: int = Field(default=200, ge=1, le=1000, description="UEs per resync transaction")
    heartbeat_timeout: float = Field(default=8.0, ge=1, le=300)
    stop_when_empty: bool = False
    # Scales every delay the worker computes (backoff): tests and demos run 30 s as 0.03 s.
    time_scale: float = Field(default=1.0, gt=0, le=1)

    log_format: Literal["auto", "text", "json"] = "auto"
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    log_file: Path | None = None
    log_rotation: str = "50 MB"
    log_retention: str = "30 days"

    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_bind: str = "127.0.0.1"

    @field_validator("backoff", mode="before")
    @classmethod
    def _split_backoff(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            if not parts:
                raise ValueError("give at least one delay, e.g. 30,60,120")
            return tuple(parse_duration(p) for p in parts)
        return value

    @field_validator("backoff")
    @classmethod
    def _check_backoff(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v < 0 for v in value):
            raise ValueError("delays must be zero or more seconds, e.g. 30,60,120")
        return value

    def dsn(self) -> str:
        """The connection string, password included: hand it to libpq, never to a log."""
        if self.database_url is not None:
            return postgres_url(self.database_url.get_secret_value(), "the database URL")
        laravel_url = self.db_url.get_secret_value().strip() if self.db_url else ""
        if laravel_url or self.db_database:
            connection = (self.db_connection or "pgsql").strip()
            if connection != "pgsql":
                raise SettingsError(
                    f"DB_CONNECTION={connection} in the Laravel .env: ue-resync reads DB_URL and "
                    "DB_* only for DB_CONNECTION=pgsql (PostgreSQL); otherwise set "
                    "UE_RESYNC_DATABASE_URL"
                )
        if laravel_url:
            return postgres_url(laravel_url, "DB_URL")
        if self.db_database:
            user = quote(self.db_username or "", safe="")
            password = self.db_password.get_secret_value() if self.db_password else ""
            auth = (
                f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
            )
            host = quote(self.db_host or "localhost", safe="")  # a socket directory is a path
            port = f":{self.db_port}" if self.db_port else ""
            return f"postgresql://{auth}{host}{port}/{quote(self.db_database, safe='')}"
        raise SettingsError(
            "no database configured: set UE_RESYNC_DATABASE_URL (or DATABASE_URL), "
            "or point --env-file at a Laravel .env with DB_URL or DB_HOST/DB_DATABASE/DB_USERNAME"
        )

    def listen_dsn(self) -> str:
        """The connection string of the LISTEN connection: UE_RESYNC_LISTEN_URL, else dsn()."""
        if self.listen_url is not None and self.listen_url.get_secret_value().strip():
            return self.listen_url.get_secret_value()
        return self.dsn()

    def has_database(self) -> bool:
        return (
            self.database_url is not None
            or bool(self.db_url and self.db_url.get_secret_value().strip())
            or bool(self.db_database)
        )


# The URL schemes libpq reads, and Laravel's name for PostgreSQL in DB_URL / DATABASE_URL.
_LIBPQ_SCHEMES = ("postgresql", "postgres")
_LARAVEL_SCHEME = "pgsql"


def postgres_url(dsn: str, what: str) -> str:
    """`dsn` as libpq reads it: Laravel's `pgsql://` becomes `postgresql://`; a URL of another
    database (`mysql://…`) is refused in one line naming `what` it came from. A keyword string
    (`host=… dbname=…`) is passed on as it is."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or " " in scheme or "=" in scheme:
        return dsn
    if scheme.lower() == _LARAVEL_SCHEME:
        return f"postgresql://{rest}"
    if scheme.lower() not in _LIBPQ_SCHEMES:
        raise SettingsError(
            f"{what} is a {scheme}:// URL: ue-resync needs PostgreSQL (postgresql://, or "
            "Laravel's pgsql://)"
        )
    return dsn


def redact(dsn: str) -> str:
    """`dsn` with any password replaced, for messages and logs."""
    if "://" not in dsn:
        return " ".join(
            "password=***" if part.startswith("password=") else part for part in dsn.split()
        )
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        auth, host = netloc.rsplit("@", 1)
        user = auth.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in auth else f"{user}@{host}"
    query = "&".join(
        "password=***" if q.startswith("password=") else q for q in parts.query.split("&") if q
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def load(env_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment and `env_file` (default `.env`), then `overrides` (the flags
    an operator gave; None means not given). A bad value raises SettingsError with one line."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if env_file is not None and not env_file.is_file():
        raise SettingsError(f"env file {env_file} does not exist")
    try:
        return Settings(_env_file=env_file or ".env", **given)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid setting: {problems}") from None
