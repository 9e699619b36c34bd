"""Fly's resolver (``fdaa::3``) for the emulated organisation, from the emulator's own machines.

What it answers follows Fly's private networking docs (docs/fly.md cites them):

* ``<machine_id>.vm.<app>.internal``, ``<app>.internal`` and ``<region>.<app>.internal``: AAAA
  records of the **started** machines only; an A question gets no answer (6PN is IPv6 only);
* ``vms.<app>.internal``: a TXT record, ``<machine_id> <region>`` comma-separated;
* ``_apps.internal``: a TXT record of the organisation's app names;
* ``_api.internal``: the Machines API;
* names outside ``.internal`` from a fixed table (the internet, as far as the topology has one), and
  NXDOMAIN for the rest, as for a name nobody registered.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from dnslib import AAAA, QTYPE, RCODE, RR, TXT, DNSRecord

log = logging.getLogger(__name__)

TTL = 5  # seconds; Fly's .internal answers are short-lived too


@dataclass(frozen=True, slots=True)
class MachineRecord:
    id: str
    app: str
    region: str
    private_ip: str
    started: bool


@dataclass(frozen=True, slots=True)
class Answer:
    aaaa: tuple[str, ...] = ()
    txt: tuple[str, ...] = ()


class Directory:
    """Names of one organisation: its machines (asked of ``machines`` on every question, so answers
    follow their states), ``_api.internal`` and the ``public`` names (``*`` wildcards allowed)."""

    def __init__(
        self,
        machines: Callable[[], Iterable[MachineRecord]],
        *,
        apps: Callable[[], Iterable[str]],
        api_address: str,
        public: Mapping[str, str] | None = None,
    ) -> None:
        self._machines = machines
        self._apps = apps
        self._api = api_address
        self._public = dict(public or {})

    def lookup(self, name: str) -> Answer | None:
        """What ``name`` has, or None when it does not exist."""
        name = name.rstrip(".").lower()
        if not name.endswith(".internal"):
            found = [address for pattern, address in self._public.items() if fnmatch.fnmatch(name, pattern)]
            return Answer(aaaa=tuple(found)) if found else None
        labels = name.removesuffix(".internal").split(".")
        apps = set(self._apps())
        machines = list(self._machines())
        if labels == ["_api"]:
            return Answer(aaaa=(self._api,))
        if labels == ["_apps"]:
            return Answer(txt=(",".join(sorted(apps)),))
        app = labels[-1]
        if app not in apps:
            return None
        mine = [m for m in machines if m.app == app]
        started = [m for m in mine if m.started]
        if len(labels) == 1:
            return Answer(aaaa=tuple(m.private_ip for m in started))
        if labels[:-1] == ["vms"]:
            return Answer(txt=(",".join(f"{m.id} {m.region}" for m in mine),))
        if len(labels) == 3 and labels[1] == "vm":
            match = [m for m in mine if m.id == labels[0]]
            if not match:
                return None
            return Answer(aaaa=tuple(m.private_ip for m in match if m.started))
        if len(labels) == 2:  # <region>.<app>.internal
            return Answer(aaaa=tuple(m.private_ip for m in started if m.region == labels[0]))
        return None


class Resolver(asyncio.DatagramProtocol):
    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return
        assert self._transport is not None
        self._transport.sendto(self.answer(request).pack(), addr)

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()
        for question in request.questions:
            name = str(question.qname)
            found = self._directory.lookup(name)
            if found is None:
                reply.header.rcode = RCODE.NXDOMAIN
                continue
            if question.qtype in (QTYPE.AAAA, QTYPE.ANY):
                for address in found.aaaa:
                    reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(address), ttl=TTL))
            if question.qtype in (QTYPE.TXT, QTYPE.ANY):
                for text in found.txt:
                    reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(text), ttl=TTL))
        return reply


async def serve(directory: Directory, host: str, port: int = 53) -> asyncio.DatagramTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: Resolver(directory), local_addr=(host, port))
    log.info("resolver on [%s]:%d", host, port)
    return transport
