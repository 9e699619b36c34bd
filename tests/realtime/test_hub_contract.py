"""The channel contract: its document agrees with its module, and its largest message fits the hub."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.realtime.hub_server import Served
from tests.realtime.realtime_clients import kind
from velocity.realtime import HubLimits, contract

PROTOCOL_MD = Path(__file__).parents[2] / "docs" / "protocol.md"


def test_the_protocol_document_names_the_version_every_event_and_the_limits() -> None:
    """docs/protocol.md and velocity.realtime.contract must not drift apart."""
    text = PROTOCOL_MD.read_text()
    assert f"contract version | **{contract.CONTRACT_VERSION}**" in text
    events = [
        contract.FILE_CHANGED,
        contract.FILE_DELETED,
        contract.FILES_BATCH,
        contract.STATUS,
        contract.LOG,
    ]
    for event in events:
        assert f"| `{event}` |" in text, f"{event} is not in the event tables of docs/protocol.md"
    assert f"{contract.MAX_MESSAGE_BYTES:,}".replace(",", " ") in text
    assert re.search(rf"`LOG_MESSAGES_PER_SECOND` \({contract.LOG_MESSAGES_PER_SECOND}\)", text)
    assert re.search(rf"`LOG_BURST` \({contract.LOG_BURST}\)", text)


def test_the_largest_contract_message_fits_the_hubs_default_frame_limit() -> None:
    """The envelope around a maximal payload stays far below ``max_frame_bytes``."""
    assert HubLimits().max_frame_bytes > contract.MAX_MESSAGE_BYTES + 1024


async def test_a_maximal_file_changed_goes_from_the_editor_client_to_the_agent_client(
    served: Served, node: str
) -> None:
    """A ``file_changed`` of MAX_MESSAGE_BYTES, from realtime-js (binary frame) to Python, intact."""
    agent = await served.python()
    await agent.subscribe(contract.preview_topic("proj-1"))
    editor = await served.js()
    await editor.command(
        "subscribe", topic=contract.preview_topic("proj-1"), config={"broadcast": {"ack": True}}
    )
    skeleton = {"path": "src/big.ts", "content": "", "encoding": "utf8"}
    content = "é" * (
        (contract.MAX_MESSAGE_BYTES - len(json.dumps(skeleton, ensure_ascii=False).encode())) // 2
    )
    message = {**skeleton, "content": content}
    assert len(json.dumps(message, ensure_ascii=False).encode()) <= contract.MAX_MESSAGE_BYTES
    assert (
        await editor.command("send", topic="preview:proj-1", event=contract.FILE_CHANGED, payload=message)
        == "ok"
    )
    received = await agent.log.expect(kind("broadcast", event=contract.FILE_CHANGED))
    assert received["payload"] == message
