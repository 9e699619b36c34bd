"""Emulator records rendered as the JSON Fly sends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from velocity.emulator.fleet import EmulatedMachine, Lease
from velocity.emulator.wire import image_ref, render_config


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def machine_json(
    machine: EmulatedMachine,
    *,
    summary: bool = False,
    lease: Lease | None = None,
    checks: list[dict[str, Any]] | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """A machine as Fly answers it; ``version`` renders that (replaced) version instead of the current."""
    config = machine.versions.get(version, machine.config) if version else machine.config
    state = "replaced" if version and version != machine.version else machine.state
    body: dict[str, Any] = {
        "id": machine.id,
        "name": machine.name,
        "state": state,
        "region": machine.region,
        "instance_id": version or machine.version,
        "version": version or machine.version,
        "private_ip": machine.private_ip,
        "created_at": rfc3339(machine.created_at),
        "updated_at": rfc3339(machine.updated_at),
    }
    if summary:
        return body
    body.update(
        config=render_config(config),
        image_ref=image_ref(config["image"]),
        events=list(machine.events),
        checks=checks or [],
        host_status="ok",
    )
    if lease is not None:
        body["lease"] = {
            "owner": lease.owner,
            "expires_at": lease.expires_at,
            "description": lease.description,
        }
    return body


def lease_json(lease: Lease) -> dict[str, Any]:
    """The lease as Fly sends it: inside a ``{"status", "data"}`` envelope, not the spec's flat shape."""
    return {
        "status": "success",
        "data": {
            "nonce": lease.nonce,
            "expires_at": lease.expires_at,
            "owner": lease.owner,
            "description": lease.description,
            "version": lease.version,
        },
    }
