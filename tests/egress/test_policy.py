"""The egress policy as pure decisions: allowlist entries, internal services, internal addresses."""

from __future__ import annotations

import pytest

from velocity.egress import Caller, EgressPolicy, InternalService, PathRule, Refused, parse_allowlist
from velocity.egress.addresses import internal_kind, parse_address
from velocity.egress.policy import Entry, Target

CALLER = Caller(machine_id="vm1", project_id="proj-1")
ORCHESTRATOR = "orchestrator.velocity.internal"
RULES = (
    PathRule(frozenset({"GET", "HEAD"}), r"/v1/projects/{project}/snapshot"),
    PathRule(frozenset({"GET", "POST"}), r"/realtime/v1/[A-Za-z0-9_./-]*"),
)


def policy(*entries: str) -> EgressPolicy:
    return EgressPolicy(
        allowlist=parse_allowlist(entries),
        internal=(InternalService(ORCHESTRATOR, ("127.0.0.1", 8000), RULES),),
    )


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("registry.npmjs.org", Entry("registry.npmjs.org")),
        ("Registry.NPMJS.org.", Entry("registry.npmjs.org")),
        ("example.com:8443", Entry("example.com", 8443)),
        ("*.supabase.co", Entry("*.supabase.co")),
        ("127.0.0.2:9000", Entry("127.0.0.2", 9000)),
        ("[::1]:80", Entry("::1", 80)),
        ("fd00::1", Entry("fd00::1")),
    ],
)
def test_allowlist_entries_are_normalised(text: str, entry: Entry) -> None:
    """Names lose case and a trailing dot, IP literals take their canonical form, ports are kept."""
    assert Entry.parse(text) == entry


@pytest.mark.parametrize(
    "text", ["exa mple.com", "host:0", "host:99999", "host:http", "[::1", "a/b", "*.", "-x.com"]
)
def test_a_malformed_allowlist_entry_is_refused(text: str) -> None:
    """Entries that are no host, *.domain or address stop the start rather than match something odd."""
    with pytest.raises(ValueError, match=r"is not|no valid port"):
        Entry.parse(text)


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("registry.npmjs.org", 443, True),
        ("registry.npmjs.org", 80, True),
        ("registry.npmjs.org", 22, False),
        ("REGISTRY.npmjs.org.", 443, True),
        ("evil-registry.npmjs.org.attacker.net", 443, False),
        ("abc.supabase.co", 443, True),
        ("a.b.supabase.co", 443, True),
        ("supabase.co", 443, False),
        ("api.example.com", 8443, True),
        ("api.example.com", 443, False),
        ("example.org", 443, False),
    ],
)
def test_a_tunnel_passes_only_to_a_listed_host_and_port(host: str, port: int, allowed: bool) -> None:
    """Bare entries open 80 and 443, ``host:port`` that port alone, ``*.domain`` names below it."""
    rules = policy("registry.npmjs.org", "*.supabase.co", "api.example.com:8443")
    if allowed:
        assert rules.tunnel(host, port).port == port
    else:
        with pytest.raises(Refused) as refused:
            rules.tunnel(host, port)
        assert refused.value.status == 403
        assert "PREVIEW_EGRESS_ALLOWLIST" in refused.value.message


def test_the_refusal_names_the_host_and_the_setting_to_change() -> None:
    """Whoever reads the 403 learns what was refused and where to allow it."""
    with pytest.raises(Refused) as refused:
        policy("registry.npmjs.org").tunnel("api.stripe.com", 443)
    assert refused.value.message == (
        "api.stripe.com:443 is not on the egress allowlist; add it to PREVIEW_EGRESS_ALLOWLIST "
        "(the orchestrator's setting) to let previews reach it"
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/projects/proj-1/snapshot", True),
        ("HEAD", "/v1/projects/proj-1/snapshot", True),
        ("GET", "/realtime/v1/websocket", True),
        ("POST", "/realtime/v1/api/broadcast", True),
        ("GET", "/v1/projects/proj-2/snapshot", False),
        ("PUT", "/v1/projects/proj-1/snapshot", False),
        ("GET", "/v1/previews", False),
        ("GET", "/v1/projects/proj-1", False),
        ("GET", "/realtime/v1/../../v1/previews", False),
        ("GET", "/realtime/v1/%2e%2e/v1/previews", False),
        ("GET", "/v1/projects/proj-1/snapshot/../../proj-2/snapshot", False),
        ("GET", "//v1/projects/proj-1/snapshot", False),
        ("GET", "/v1/projects/proj-1/snapshot;x", False),
        ("GET", "/auth/v1/.well-known/jwks.json", False),
        ("GET", "/metrics", False),
    ],
)
def test_the_orchestrator_answers_a_preview_only_its_own_snapshot_and_realtime(
    method: str, path: str, allowed: bool
) -> None:
    """The proxy-only name maps to the orchestrator, for the caller's own snapshot and Realtime alone."""
    rules = policy()
    if allowed:
        assert rules.request(CALLER, method, ORCHESTRATOR, 80, path).fixed == ("127.0.0.1", 8000)
    else:
        with pytest.raises(Refused, match="not open to previews"):
            rules.request(CALLER, method, ORCHESTRATOR, 80, path)


def test_a_project_id_is_matched_literally_not_as_a_pattern() -> None:
    """A project id with regex characters matches only itself."""
    caller = Caller(machine_id="vm1", project_id="p.1")
    with pytest.raises(Refused):
        policy().request(caller, "GET", ORCHESTRATOR, 80, "/v1/projects/pX1/snapshot")
    assert policy().request(caller, "GET", ORCHESTRATOR, 80, "/v1/projects/p.1/snapshot").fixed


@pytest.mark.parametrize("port", [8000, 443])
def test_the_orchestrator_name_answers_on_port_80_only(port: int) -> None:
    """Other ports of the proxy-only name lead nowhere."""
    with pytest.raises(Refused, match="port 80 only"):
        policy().request(CALLER, "GET", ORCHESTRATOR, port, "/v1/projects/proj-1/snapshot")


def test_a_tunnel_to_the_orchestrator_name_is_opened_only_for_inspection() -> None:
    """Websocket clients CONNECT even for ws://: such a tunnel is marked so its inner request is checked."""
    target = policy().tunnel(ORCHESTRATOR, 80)
    assert target.inspected and target.fixed is None
    with pytest.raises(Refused, match="port 80 only"):
        policy().tunnel(ORCHESTRATOR, 8000)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback"),
        ("127.0.0.2", "a loopback"),
        ("10.1.2.3", "a private"),
        ("172.16.0.1", "a private"),
        ("192.168.1.1", "a private"),
        ("100.100.100.200", "a private (shared address space)"),
        ("169.254.169.254", "a link-local (cloud metadata)"),
        ("0.0.0.0", "an unspecified"),
        ("224.0.0.251", "a multicast"),
        ("255.255.255.255", "a reserved"),
        ("::", "an unspecified"),
        ("::1", "a loopback"),
        ("fdaa:0:1::2", "a private (unique local, as Fly's private network)"),
        ("fd00:ec2::254", "a private (unique local, as Fly's private network)"),
        ("fe80::1", "a link-local"),
        ("ff02::1", "a multicast"),
        ("::ffff:127.0.0.1", "a loopback"),
        ("::ffff:169.254.169.254", "a link-local (cloud metadata)"),
        ("64:ff9b::a9fe:a9fe", "a link-local (cloud metadata)"),
        ("2002:7f00:1::", "a loopback"),
        ("104.16.1.1", None),
        ("203.0.113.80", None),
        ("2606:4700::1", None),
    ],
)
def test_internal_addresses_are_recognised_in_every_spelling(address: str, kind: str | None) -> None:
    """Loopback, private, link-local, multicast, unspecified: also inside IPv6 forms that carry IPv4."""
    parsed = parse_address(address)
    assert parsed is not None
    assert internal_kind(parsed) == kind


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "10.0.0.7", "::ffff:10.0.0.7"])
def test_a_listed_name_that_resolves_to_an_internal_address_is_refused(address: str) -> None:
    """DNS rebinding: the name passes, the address it resolves to does not."""
    resolved = parse_address(address)
    assert resolved is not None
    with pytest.raises(Refused) as refused:
        policy("registry.example").check_addresses(Target("registry.example", 443), [resolved])
    assert f"resolves to {resolved}" in refused.value.message
    assert "PREVIEW_EGRESS_ALLOWLIST" in refused.value.message


def test_an_internal_address_passes_when_the_allowlist_names_it() -> None:
    """An operator may open a private registry by listing its address as well as its name."""
    resolved = parse_address("10.0.0.7")
    assert resolved is not None
    policy("npm.corp", "10.0.0.7").check_addresses(Target("npm.corp", 443), [resolved])


@pytest.mark.parametrize("host", ["exa mple.com", "a\r\nHost: x", "é.com", ""])
def test_a_host_that_is_no_name_gets_a_400(host: str) -> None:
    """Garbage in the host position is a client error, not a lookup."""
    with pytest.raises(Refused) as refused:
        policy("example.com").tunnel(host, 443)
    assert refused.value.status == 400
