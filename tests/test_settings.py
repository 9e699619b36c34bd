"""Settings: the seed guide's variables, their defaults, bad values, and the README's table."""

from __future__ import annotations

from pathlib import Path

import pytest

from velocity.domain import ConfigError
from velocity.settings import ProviderKind, Settings, load_settings, settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_seed_guides_defaults_hold() -> None:
    """Every variable of the seed guide has the seed's default."""
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.container_memory_mb, s.container_cpu_count, s.container_cpu_kind) == (512, 1, "shared")
    assert (s.container_internal_port, s.container_timeout_seconds) == (8080, 300)
    assert (s.max_containers_per_user, s.max_container_lifetime_minutes) == (3, 60)
    assert s.container_cleanup_interval_minutes == 5
    assert s.fly_app_name == "velocity-preview-containers"
    assert s.preview_provider is ProviderKind.LOCAL


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONTAINER_MEMORY_MB", "lots"),
        ("CONTAINER_MEMORY_MB", "64"),
        ("CONTAINER_CPU_KIND", "turbo"),
        ("PREVIEW_PROVIDER", "docker"),
        ("MAX_CONTAINERS_PER_USER", "0"),
        ("PREVIEW_DOMAIN", "http://x/"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """The error names the variable and the value it got."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable) as raised:
        load_settings(_env_file=None)
    assert repr(value) in raised.value.message


def test_settings_are_read_from_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .env file in the working directory is read; the environment wins over it."""
    (tmp_path / ".env").write_text(
        'MAX_CONTAINERS_PER_USER=7\nFLY_REGIONS="iad, ord"\nCONTAINER_MEMORY_MB=1024\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONTAINER_MEMORY_MB", "2048")
    s = load_settings()
    assert s.max_containers_per_user == 7
    assert s.fly_regions == ["iad", "ord"]
    assert s.container_memory_mb == 2048


def test_the_readme_documents_every_setting() -> None:
    """README.md carries the settings table exactly as the code defines it."""
    assert settings_table() in README.read_text()


def test_database_urls_people_paste_get_the_async_driver() -> None:
    """postgres:// and postgresql:// become asyncpg URLs; the default is a SQLite file."""
    assert (
        Settings(database_url="postgres://u@h/db", _env_file=None).sqlalchemy_url
        == "postgresql+asyncpg://u@h/db"
    )  # type: ignore[call-arg]
    assert Settings(_env_file=None).sqlalchemy_url.startswith("sqlite+aiosqlite:///")  # type: ignore[call-arg]


def test_on_fly_the_preview_app_must_be_named_and_no_secret_is_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fly sets FLY_APP_NAME to the orchestrator's own app: VELOCITY_FLY_APP_NAME is then required."""
    monkeypatch.setenv("FLY_MACHINE_ID", "148e21ea7d1e89")
    monkeypatch.setenv("PREVIEW_PROVIDER", "fly")
    monkeypatch.setenv("FLY_APP_NAME", "velocity-orchestrator")
    monkeypatch.setenv("FLY_API_TOKEN", "fo1_not-to-be-printed")
    with pytest.raises(ConfigError, match="VELOCITY_FLY_APP_NAME must be set on Fly") as raised:
        load_settings(_env_file=None)
    assert "fo1_not-to-be-printed" not in raised.value.message
    monkeypatch.setenv("VELOCITY_FLY_APP_NAME", "velocity-preview-containers")
    monkeypatch.setenv("DATABASE_URL", "postgresql://velocity@db.flycast:5432/velocity")
    assert load_settings(_env_file=None).fly_app_name == "velocity-preview-containers"


def test_on_fly_the_database_must_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kit runs two orchestrator machines: on a SQLite file each would have its own previews and
    destroy the other's machines as orphans, and the file goes with every deploy. Refused at start."""
    monkeypatch.setenv("FLY_MACHINE_ID", "148e21ea7d1e89")
    monkeypatch.setenv("PREVIEW_PROVIDER", "fly")
    monkeypatch.setenv("VELOCITY_FLY_APP_NAME", "velocity-preview-containers")
    with pytest.raises(ConfigError, match="DATABASE_URL must be set on Fly"):
        load_settings(_env_file=None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://velocity@db.flycast:5432/velocity")
    assert load_settings(_env_file=None).sqlalchemy_url.startswith("postgresql+asyncpg://")


def test_the_agent_and_the_project_s_code_must_be_two_uids(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sandbox started by root runs the agent and the project's code as two users; one uid for both
    is refused at start, naming both settings."""
    monkeypatch.setenv("LOCAL_AGENT_UID", "1000")
    monkeypatch.setenv("LOCAL_SANDBOX_UID", "1000")
    with pytest.raises(ConfigError, match="LOCAL_AGENT_UID and LOCAL_SANDBOX_UID must differ"):
        load_settings(_env_file=None)
