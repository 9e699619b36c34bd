"""What a local sandbox's network is made of: its variables, the orchestrator name, the default allowlist."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from velocity.domain import ConfigError
from velocity.providers.local.network import (
    EGRESS_SOCKET,
    NetworkOptions,
    SandboxNetwork,
    default_allowlist,
    listen_address,
)
from velocity.settings import load_settings

ORCHESTRATOR = "http://127.0.0.1:8123"


@pytest.fixture
async def network() -> AsyncIterator[SandboxNetwork]:
    made = SandboxNetwork(
        NetworkOptions(orchestrator_url=ORCHESTRATOR, orchestrator_address=("127.0.0.1", 8123))
    )
    yield made
    await made.aclose()


def test_urls_of_the_orchestrator_become_the_proxy_only_name(network: SandboxNetwork) -> None:
    """SNAPSHOT_URL and SUPABASE_URL pointing at the orchestrator are rewritten; other URLs are not."""
    env = network.env(
        {
            "SNAPSHOT_URL": f"{ORCHESTRATOR}/v1/projects/p1/snapshot",
            "SUPABASE_URL": ORCHESTRATOR,
            "OTHER_URL": f"{ORCHESTRATOR}/x",
        }
    )
    assert env["SNAPSHOT_URL"] == "http://orchestrator.velocity.internal/v1/projects/p1/snapshot"
    assert env["SUPABASE_URL"] == "http://orchestrator.velocity.internal"
    assert "OTHER_URL" not in env


@pytest.mark.parametrize("url", ["https://abc.supabase.co", "http://127.0.0.1:81234", "http://127.0.0.1:812"])
def test_a_supabase_elsewhere_is_left_alone(network: SandboxNetwork, url: str) -> None:
    """Only the orchestrator's own URL (not a prefix of another port) is rewritten."""
    assert "SUPABASE_URL" not in network.env({"SUPABASE_URL": url})


def test_a_sandbox_gets_the_proxy_variables_and_a_fixed_dev_port(network: SandboxNetwork) -> None:
    """Proxies point at the agent's bridge, loopback bypasses them, and every dev server uses 5173."""
    env = network.env({})
    assert env["HTTP_PROXY"] == env["https_proxy"] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == "127.0.0.1,localhost,::1"
    assert env["AGENT_EGRESS_SOCKET"] == EGRESS_SOCKET
    assert env["AGENT_DEV_PORT"] == "5173"
    assert "AGENT_DEV_PORT" not in network.env({"AGENT_DEV_PORT": "3000"})


@pytest.mark.parametrize(
    ("registry", "supabase", "expected"),
    [
        ("https://registry.npmjs.org/", None, ("registry.npmjs.org", "registry.yarnpkg.com")),
        ("https://registry.npmjs.org/", ORCHESTRATOR, ("registry.npmjs.org", "registry.yarnpkg.com")),
        (
            "https://registry.npmjs.org/",
            "https://abc.supabase.co",
            ("registry.npmjs.org", "registry.yarnpkg.com", "abc.supabase.co"),
        ),
        ("http://npm.corp:4873/", "https://db.example.com:8443/", ("npm.corp:4873", "db.example.com:8443")),
    ],
)
def test_the_default_allowlist_is_the_registry_and_a_supabase_that_is_not_the_orchestrator(
    registry: str, supabase: str | None, expected: tuple[str, ...]
) -> None:
    """npm's registry host (the public one with Yarn's mirror, which yarn 1 lockfiles name), plus
    SUPABASE_URL's host when Supabase is elsewhere; ports kept."""
    assert default_allowlist(registry, supabase, ORCHESTRATOR) == expected


@pytest.mark.parametrize(
    ("host", "dialled"), [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.0.0.5", "10.0.0.5")]
)
def test_an_orchestrator_on_a_wildcard_address_is_reached_on_its_loopback(host: str, dialled: str) -> None:
    """The proxy dials the orchestrator where it listens; a wildcard means loopback."""
    assert listen_address(host, 8000) == (dialled, 8000)


def test_a_bad_allowlist_entry_stops_the_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """PREVIEW_EGRESS_ALLOWLIST is checked with the other settings, entry by entry."""
    monkeypatch.setenv("PREVIEW_EGRESS_ALLOWLIST", "registry.npmjs.org, not a host")
    with pytest.raises(ConfigError, match="PREVIEW_EGRESS_ALLOWLIST"):
        load_settings(_env_file=None)


def test_the_allowlist_is_read_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spaces around entries are ignored; unset means the defaults."""
    monkeypatch.setenv("PREVIEW_EGRESS_ALLOWLIST", "registry.npmjs.org, *.supabase.co ,api.example.com:8443")
    settings = load_settings(_env_file=None)
    assert settings.preview_egress_allowlist == [
        "registry.npmjs.org",
        "*.supabase.co",
        "api.example.com:8443",
    ]
    monkeypatch.delenv("PREVIEW_EGRESS_ALLOWLIST")
    assert load_settings(_env_file=None).preview_egress_allowlist is None


async def test_the_first_sandbox_listens_with_the_registry_npm_names(
    network: SandboxNetwork, tmp_path: Path
) -> None:
    """npm's answer (asked while the orchestrator starts) becomes the sandboxes' NPM_CONFIG_REGISTRY."""
    expected = subprocess.run(
        ["npm", "config", "get", "registry"], capture_output=True, text=True
    ).stdout.strip()
    await network.open("vm-1", "p1", tmp_path / "egress")
    assert (tmp_path / "egress" / "proxy.sock").is_socket()
    assert network.env({})["NPM_CONFIG_REGISTRY"] == expected
    await network.close("vm-1")
    assert not (tmp_path / "egress" / "proxy.sock").exists()
