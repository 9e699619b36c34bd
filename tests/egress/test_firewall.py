"""The preview image's firewall (preview-container/firewall.nft), loaded into the namespace standing in
for a Fly machine (``fly_guest``), tried from its every uid and from the network beside it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.egress.fly_guest import Namespaces, fly_guest_network, run, serve
from velocity.agent import guest

RULES = Path(__file__).resolve().parents[2] / "preview-container" / "firewall.nft"
AGENT_UID, USER_UID = 10002, 10001

pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="nftables is not installed (make setup)")


def test_the_entrypoint_makes_the_agent_the_uid_the_firewall_lets_out() -> None:
    """The one uid the ruleset lets out is the one the image's entrypoint gives the agent."""
    assert f"define AGENT_UID = {guest.AGENT_UID}\n" in RULES.read_text()
    assert f"{USER_UID}:{USER_UID}" == guest.DEFAULT_USER


@pytest.fixture(scope="module")
def fly_machine() -> Iterator[Namespaces]:
    """The machine's namespace with the firewall loaded and the orchestrator's address added, serving
    its agent (8080), a dev server (5173) and Fly's SSH server (22) on all addresses."""
    with fly_guest_network() as ns:
        run("ip", "netns", "exec", ns.machine, "nft", "-f", str(RULES))
        orchestrator = "{ fdaa::2 . 8000 }"
        run(
            "ip",
            "netns",
            "exec",
            ns.machine,
            "nft",
            "add",
            "element",
            "inet",
            "velocity",
            "orchestrator",
            orchestrator,
        )
        machine = serve(ns.machine, 8080, 5173, 22)
        try:
            yield ns
        finally:
            machine.kill()
            machine.communicate()


def test_the_ruleset_passes_nfts_own_check() -> None:
    """``nft -c`` accepts the file as the image would load it (checked in a namespace of its own)."""
    run("unshare", "--net", "nft", "-c", "-f", str(RULES))


@pytest.mark.parametrize(
    ("uid", "host", "port", "outcome"),
    [
        (USER_UID, "127.0.0.1", 5173, "connected"),  # its own dev server
        (USER_UID, "198.51.100.9", 80, "refused"),  # the internet: only via the proxy
        (USER_UID, "fdaa::2", 8000, "refused"),  # not even the orchestrator
        (USER_UID, "169.254.169.254", 80, "refused"),
        (AGENT_UID, "198.51.100.9", 80, "connected"),  # the proxy's way out
        (AGENT_UID, "fdaa::2", 8000, "connected"),  # the orchestrator
        (AGENT_UID, "fdaa::3", 53, "connected"),  # Fly's DNS
        (AGENT_UID, "fdaa::5", 80, "refused"),  # another machine on the private network
        (AGENT_UID, "fdaa::2", 22, "refused"),  # the orchestrator's other ports
        (AGENT_UID, "169.254.169.254", 80, "refused"),  # metadata, even for the agent
        (0, "fdaa::5", 80, "refused"),  # root is no exception
    ],
)
def test_from_the_machine_only_the_agent_goes_out_and_never_to_private_addresses(
    fly_machine: Namespaces, uid: int, host: str, port: int, outcome: str
) -> None:
    """User code reaches loopback alone; the agent reaches the orchestrator, DNS and public addresses."""
    assert fly_machine.connect("machine", uid, host, port) == outcome


@pytest.mark.parametrize(("port", "outcome"), [(8080, "connected"), (5173, "refused"), (22, "connected")])
def test_from_the_private_network_only_the_agents_port_answers(
    fly_machine: Namespaces, port: int, outcome: str
) -> None:
    """Another machine on the private network reaches the agent, never the dev server behind it; Fly's
    SSH server (``fly ssh console``, port 22) answers on the private network alone."""
    assert fly_machine.connect("network", 0, "fdaa::1", port) == outcome


def test_fly_s_ssh_server_answers_the_private_network_alone(fly_machine: Namespaces) -> None:
    """Over IPv4 (Fly's proxy network, or anything not on 6PN) port 22 is refused."""
    assert fly_machine.connect("network", 0, "198.51.100.1", 22) == "refused"
    assert fly_machine.connect("network", 0, "198.51.100.1", 8080) == "connected"
