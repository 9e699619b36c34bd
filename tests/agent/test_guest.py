"""The preview image's entrypoint, its pure parts: what it adds to the firewall, how it starts the agent."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from velocity.agent import guest
from velocity.agent.boot import no_project
from velocity.agent.config import AgentConfig
from velocity.agent.guest import AGENT_UID, agent_command, agent_environment, orchestrator_elements
from velocity.agent.identity import UserCode
from velocity.agent.machine_egress import allowlist
from velocity.domain.errors import ConfigError

USER = UserCode(10001, 10001)


def test_the_orchestrator_s_address_and_port_come_from_the_snapshot_url() -> None:
    assert orchestrator_elements("http://[fdaa:0:1::2]:8000/v1/projects/p/snapshot") == ["fdaa:0:1::2 . 8000"]
    assert orchestrator_elements("") == []


def test_the_project_s_code_gets_the_machine_s_proxy_and_the_agent_reaches_the_orchestrator_directly() -> (
    None
):
    env = {"SNAPSHOT_URL": "http://velocity-orchestrator.internal:8000/v1/projects/p/snapshot"}
    agent_environment(env, USER, None)
    assert env["AGENT_USER"] == "10001:10001" and env["AGENT_EGRESS"] == "machine"
    assert env["HTTPS_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128"
    assert "velocity-orchestrator.internal" in env["NO_PROXY"].split(",")
    assert "AGENT_POLICY_ERROR" not in env
    agent_environment(env, USER, "nft -f failed: Operation not permitted")
    assert env["AGENT_POLICY_ERROR"] == "nft -f failed: Operation not permitted"


def test_as_root_the_agent_keeps_only_the_capabilities_that_start_and_stop_the_project(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    command = agent_command(USER)
    assert command[:4] == ["setpriv", f"--reuid={AGENT_UID}", "--regid=10001", "--clear-groups"]
    assert "--bounding-set=-all,+setuid,+setgid,+kill" in command
    assert command[-2:] == ["-m", "velocity.agent"]


@pytest.mark.parametrize("raw", ["0:0", "root", "10001:x", ""])
def test_the_project_s_user_must_be_an_unprivileged_uid(raw: str) -> None:
    with pytest.raises(ConfigError, match="AGENT_USER"):
        UserCode.parse(raw)


def test_the_project_s_code_starts_through_setpriv_with_nothing_of_the_agent_s() -> None:
    assert UserCode.parse("10001").command(["npm", "ci"]) == [
        "setpriv", "--reuid=10001", "--regid=10001", "--clear-groups",
        "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--", "npm", "ci",
    ]  # fmt: skip


def test_the_machine_s_proxy_allows_what_the_orchestrator_passed_or_the_registry_and_supabase() -> None:
    assert allowlist({"PREVIEW_EGRESS_ALLOWLIST": "a.example, b.example:8443"}) == (
        "a.example",
        "b.example:8443",
    )
    assert allowlist({"SUPABASE_URL": "https://abc.supabase.co"}) == (
        "registry.npmjs.org",
        "registry.yarnpkg.com",
        "abc.supabase.co",
    )
    # The orchestrator standing in for Supabase is on the private network: the project's code may not.
    assert allowlist({"SUPABASE_URL": "http://velocity.internal:8000"}) == (
        "registry.npmjs.org",
        "registry.yarnpkg.com",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="the entrypoint's policy is applied as root")
def test_the_orchestrator_s_name_is_resolved_before_the_firewall_keeps_root_from_the_resolver(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Once loaded, the firewall lets only the agent's uid reach Fly's resolver: the entrypoint
    (root) looks the orchestrator up first, then loads the rules, then adds its address."""
    calls: list[tuple[str, ...]] = []

    def resolve(host: str, port: int, *_: Any) -> list[Any]:
        calls.append(("resolve", host))
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fdaa:0:1:a7b::2", port, 0, 0))]

    monkeypatch.setattr(guest, "_nft", lambda *args: calls.append(("nft", *args)))
    monkeypatch.setattr(guest.socket, "getaddrinfo", resolve)
    snapshot = "http://velocity-orchestrator.internal:8000/v1/projects/p/snapshot"
    guest.apply_policy({"SNAPSHOT_URL": snapshot, "WORKSPACE": str(tmp_path / "w")}, USER)
    assert [call[:2] for call in calls] == [
        ("resolve", "velocity-orchestrator.internal"),
        ("nft", "-f"),
        ("nft", "add"),
    ]
    assert calls[2][-1] == "{ fdaa:0:1:a7b::2 . 8000 }"


def test_without_cap_net_admin_the_policy_error_says_what_to_add(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = subprocess.CompletedProcess(
        ["nft"],
        1,
        "",
        "/etc/velocity/firewall.nft:67:3-52: Error: Could not process rule: Operation not permitted",
    )
    monkeypatch.setattr(guest.subprocess, "run", lambda *a, **k: refused)
    with pytest.raises(guest.PolicyError, match=r"without CAP_NET_ADMIN .*--cap-add NET_ADMIN"):
        guest._nft("-f", "/etc/velocity/firewall.nft")


def test_an_image_run_with_neither_a_snapshot_nor_a_project_says_there_is_nothing_to_preview(
    tmp_path: Path,
) -> None:
    config = AgentConfig.from_env({"PROJECT_ID": "test", "WORKSPACE": str(tmp_path)})
    assert no_project(config) == (
        f"no project to preview: SNAPSHOT_URL is not set and {tmp_path} holds no package.json (the "
        "orchestrator sets SNAPSHOT_URL on each preview machine; to try the image alone, mount a "
        f"project at {tmp_path})"
    )
    (tmp_path / "package.json").write_text("{}")
    assert no_project(config) is None
    with_snapshot = AgentConfig.from_env(
        {"PROJECT_ID": "test", "WORKSPACE": str(tmp_path / "empty"), "SNAPSHOT_URL": "http://[::1]:1/s"}
    )
    assert no_project(with_snapshot) is None
