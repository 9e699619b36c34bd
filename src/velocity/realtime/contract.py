"""The preview channel contract, version 1, as names and types (docs/protocol.md is the prose).

The editor and the agent meet on topic ``preview:{project_id}``: the editor sends file changes, the
agent reports status and log lines. Both announce themselves with presence, which carries the
contract version each speaks. Additive changes (a new optional field, a new event) keep the version;
receivers ignore what they do not know. Anything else bumps ``CONTRACT_VERSION`` and gets a named
constant here, as ``velocity.agent.versions`` does for the agent's HTTP protocol.

This module has no dependencies, so the agent can import it without loading the hub.
"""

from __future__ import annotations

from typing import Final, Literal, NotRequired, TypedDict

CONTRACT_VERSION: Final = 1

TOPIC_PREFIX: Final = "preview:"

# editor -> agent
FILE_CHANGED: Final = "file_changed"
FILE_DELETED: Final = "file_deleted"
FILES_BATCH: Final = "files_batch"
# agent -> editor
STATUS: Final = "status"
LOG: Final = "log"

# Supabase's smallest broadcast limit is 256 KB (free plan); the JSON of one payload stays under it.
MAX_MESSAGE_BYTES: Final = 250_000
# Log messages per second per preview, and the burst allowed above it: Supabase counts messages per
# project (100/s free, 500/s pro), shared by every preview of the deployment.
LOG_MESSAGES_PER_SECOND: Final = 10
LOG_BURST: Final = 20

Encoding = Literal["utf8", "base64"]
State = Literal["installing", "starting", "ready", "error"]
Stream = Literal["stdout", "stderr", "install", "agent"]
Role = Literal["editor", "agent"]


def preview_topic(project_id: str) -> str:
    return f"{TOPIC_PREFIX}{project_id}"


class FileChanged(TypedDict):
    path: str  # relative, POSIX separators, normalised; no "..", no leading "/", not under node_modules/
    content: str
    encoding: Encoding
    seq: NotRequired[int]


class FileDeleted(TypedDict):
    path: str
    seq: NotRequired[int]


class FilesBatch(TypedDict):
    files: list[FileChanged]
    deleted: list[str]
    seq: NotRequired[int]


class Status(TypedDict):
    state: State
    detail: str
    at: str  # ISO 8601, UTC, e.g. "2026-01-01T12:00:00.000Z"
    preview_id: NotRequired[str]
    path: NotRequired[str]  # the file an error is about


class Log(TypedDict):
    stream: Stream
    line: str
    preview_id: NotRequired[str]
    dropped: NotRequired[int]  # lines skipped by the rate limit since the previous log message


class Presence(TypedDict):
    role: Role
    contract: int
    preview_id: NotRequired[str]  # agents
    agent_version: NotRequired[str]  # agents
