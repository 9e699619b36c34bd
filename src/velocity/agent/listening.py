"""What listens in the machine besides the agent: where a dev server that ignores ``PORT`` went.

Read from the kernel's socket tables (``/proc/net/tcp``, ``/proc/net/tcp6``), which show every TCP
listener of the machine's network namespace, whoever owns it; the agent's own (its port, its egress
proxies) are the sockets among its open files. The project's processes run as another uid, whose
open files the agent may not read, so this is how it learns their addresses.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

LISTEN = "0A"  # the kernel's TCP_LISTEN


def others(proc: Path = Path("/proc"), *, besides: int | None = None) -> list[str]:
    """``address:port`` of each TCP listener not opened by this process, sorted; empty when one
    listens on port ``besides`` (whatever the address: a server there is on its way)."""
    own = _own_sockets(proc)
    found = set()
    for table in (proc / "net" / "tcp", proc / "net" / "tcp6"):
        for address, port, inode in _listeners(table):
            if port == besides and inode not in own:
                return []
            if inode not in own:
                found.add(f"[{address}]:{port}" if ":" in address else f"{address}:{port}")
    return sorted(found)


def _listeners(table: Path) -> list[tuple[str, int, str]]:
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        hex_address, hex_port = fields[1].split(":")
        found.append((_address(hex_address), int(hex_port, 16), fields[9]))
    return found


def _address(hex_address: str) -> str:
    """The kernel writes addresses as 32-bit words in host order (little-endian here)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _own_sockets(proc: Path) -> set[str]:
    fds = proc / "self" / "fd"
    inodes: set[str] = set()
    try:
        entries = os.listdir(fds)
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(fds / entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes
