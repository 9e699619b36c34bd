"""The preview image's entrypoint, its pure parts: what it adds to the firewall, how it starts the agent."""

from __future__ import annotations

import pytest

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
    assert allowlist({"SUPABASE_URL": "https://abc.supabase.co"}) == ("registry.npmjs.org", "abc.supabase.co")
    # The orchestrator standing in for Supabase is on the private network: the project's code may not.
    assert allowlist({"SUPABASE_URL": "http://velocity.internal:8000"}) == ("registry.npmjs.org",)
