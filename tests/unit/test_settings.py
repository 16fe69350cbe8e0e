import re
from pathlib import Path

import pytest

from ue_resync.cli import main
from ue_resync.settings import Settings, SettingsError, load, redact


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith(("UE_RESYNC_", "DB_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_the_old_workers():
    s = load()
    assert (s.sleep, s.tries, s.backoff, s.max_time, s.timeout) == (3, 3, (30, 60, 120), 3600, 5)


def test_env_prefix_and_plain_database_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://a@h/db")
    assert load().dsn() == "postgresql://a@h/db"
    monkeypatch.setenv("UE_RESYNC_DATABASE_URL", "postgresql://b@h/db")
    assert load().dsn() == "postgresql://b@h/db"


def test_flags_override_env(monkeypatch):
    monkeypatch.setenv("UE_RESYNC_TRIES", "5")
    assert load().tries == 5
    assert load(tries=2).tries == 2
    assert load(tries=None).tries == 5  # a flag not given


def test_backoff_accepts_durations(monkeypatch):
    monkeypatch.setenv("UE_RESYNC_BACKOFF", "30s, 1m,2m")
    assert load().backoff == (30, 60, 120)


def test_laravel_env_file(tmp_path: Path):
    env = tmp_path / "laravel.env"
    env.write_text(
        "APP_KEY=base64:xyz\nDB_CONNECTION=pgsql\nDB_HOST=db.example\nDB_PORT=5433\n"
        "DB_DATABASE=catalogue\nDB_USERNAME=app\nDB_PASSWORD='p@ss:word'\n"
    )
    s = load(env)
    assert s.dsn() == "postgresql://app:p%40ss%3Aword@db.example:5433/catalogue"
    assert "p@ss" not in repr(s) and "p@ss" not in str(s.model_dump())
    assert redact(s.dsn()) == "postgresql://app:***@db.example:5433/catalogue"


def test_socket_directory_as_db_host(tmp_path: Path):
    env = tmp_path / "e.env"
    env.write_text("DB_HOST=/var/run/postgresql\nDB_DATABASE=c\nDB_USERNAME=u\n")
    assert load(env).dsn() == "postgresql://u@%2Fvar%2Frun%2Fpostgresql/c"


def test_laravel_11_db_url_wins_over_the_parts(tmp_path: Path):
    env = tmp_path / "laravel.env"
    env.write_text(
        "DB_CONNECTION=pgsql\nDB_URL=pgsql://app:s3cret@db.example:5433/catalogue\n"
        "DB_HOST=elsewhere\nDB_DATABASE=other\n"
    )
    assert load(env).dsn() == "postgresql://app:s3cret@db.example:5433/catalogue"
    assert load(env).has_database()
    env.write_text("DB_URL=postgres://app@db.example/catalogue\n")
    assert load(env).dsn() == "postgres://app@db.example/catalogue"
    env.write_text("DB_URL=\nDB_DATABASE=catalogue\nDB_USERNAME=app\n")
    assert load(env).dsn() == "postgresql://app@localhost/catalogue"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "DB_CONNECTION=mysql\nDB_HOST=db\nDB_PORT=3306\nDB_DATABASE=app\n",
            "DB_CONNECTION=mysql in the Laravel .env: ue-resync reads DB_URL and DB_* only for "
            "DB_CONNECTION=pgsql",
        ),
        ("DB_CONNECTION=sqlite\nDB_URL=postgresql://h/app\n", "DB_CONNECTION=sqlite"),
        ("DB_URL=mysql://root@db/app\n", "DB_URL is a mysql:// URL: ue-resync needs PostgreSQL"),
    ],
)
def test_a_laravel_env_of_another_database_is_refused_in_one_line(tmp_path, lines, message):
    env = tmp_path / "laravel.env"
    env.write_text(lines)
    with pytest.raises(SettingsError) as err:
        load(env).dsn()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_database_url_wins_over_a_laravel_env_of_another_database(monkeypatch, tmp_path):
    env = tmp_path / "laravel.env"
    env.write_text("DB_CONNECTION=mysql\nDB_DATABASE=app\n")
    monkeypatch.setenv("UE_RESYNC_DATABASE_URL", "pgsql://u@h/d")
    assert load(env).dsn() == "postgresql://u@h/d"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("UE_RESYNC_TRIES", "abc", "tries"),
        ("UE_RESYNC_TRIES", "0", "tries"),
        ("UE_RESYNC_SLEEP", "-1", "sleep"),
        ("UE_RESYNC_BACKOFF", "x,y", "backoff"),
        ("UE_RESYNC_BACKOFF", ",", "backoff"),
        ("UE_RESYNC_LOG_FORMAT", "xml", "log_format"),
        ("DB_PORT", "99999", "DB_PORT"),
    ],
)
def test_bad_values_give_one_line(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load()
    text = str(err.value)
    assert "\n" not in text and message in text and text.startswith("invalid setting")


def test_missing_database_and_missing_env_file(tmp_path):
    with pytest.raises(SettingsError, match="no database configured"):
        load().dsn()
    with pytest.raises(SettingsError, match="does not exist"):
        load(tmp_path / "nope.env")


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:secret@h:5432/d", "postgresql://u:***@h:5432/d"),
        (
            "postgresql://u@h/d?password=secret&sslmode=require",
            "postgresql://u@h/d?password=***&sslmode=require",
        ),
        ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
    ],
)
def test_redact(dsn, shown):
    assert redact(dsn) == shown


def test_the_defaults_operations_md_shows_are_the_settings_defaults(capsys):
    """The commented defaults of docs/operations.md's env file, and `work --help`, agree with
    settings.py, where each default is set."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    shown = dict(re.findall(r"^# UE_RESYNC_([A-Z_]+)=(\S+)", text, re.M))
    assert {"SLEEP", "TRIES", "BACKOFF", "TIMEOUT", "CONCURRENCY"} <= set(shown)
    for name, value in shown.items():
        field = name.lower()
        default = Settings.model_fields[field].default
        if default is None:
            continue  # an example (METRICS_PORT), not a default
        assert getattr(load(**{field: value}), field) == default, name
    with pytest.raises(SystemExit):
        main(["work", "--help"])
    concurrency = Settings.model_fields["concurrency"].default
    assert f"resync transactions at once ({concurrency})" in " ".join(
        capsys.readouterr().out.split()
    )
