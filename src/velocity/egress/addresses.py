"""Addresses the egress proxy never dials unless the operator names them: loopback, private, link-local
(the cloud metadata service among them), multicast, unspecified and reserved ones.

The list is written out rather than taken from ``ipaddress``'s ``is_private``, which also counts the
documentation ranges (a registry mirror may live there) and differs between Python releases. IPv6 forms
that carry an IPv4 address (mapped, NAT64, 6to4) are judged by the address they carry.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(network), kind)
    for network, kind in (
        ("0.0.0.0/8", "an unspecified"),
        ("10.0.0.0/8", "a private"),
        ("100.64.0.0/10", "a private (shared address space)"),
        ("127.0.0.0/8", "a loopback"),
        ("169.254.0.0/16", "a link-local (cloud metadata)"),
        ("172.16.0.0/12", "a private"),
        ("192.0.0.0/24", "a special-purpose"),
        ("192.168.0.0/16", "a private"),
        ("198.18.0.0/15", "a special-purpose (benchmarking)"),
        ("224.0.0.0/4", "a multicast"),
        ("240.0.0.0/4", "a reserved"),
    )
)
_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(network), kind)
    for network, kind in (
        ("::/128", "an unspecified"),
        ("::1/128", "a loopback"),
        ("::/96", "a reserved (IPv4-compatible)"),
        ("100::/64", "a reserved (discard)"),
        ("fc00::/7", "a private (unique local, as Fly's private network)"),
        ("fe80::/10", "a link-local"),
        ("fec0::/10", "a private (site-local)"),
        ("ff00::/8", "a multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")


def internal_kind(address: IPAddress) -> str | None:
    """What makes ``address`` internal ("a loopback", "a private"...), or ``None`` for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = _carried_v4(address)
        if carried is not None:
            return internal_kind(carried)
        return next((kind for network, kind in _V6 if address in network), None)
    return next((kind for network, kind in _V4 if address in network), None)


def _carried_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    return None


def parse_address(text: str) -> IPAddress | None:
    """An IP literal (IPv6 with or without brackets), or ``None`` when ``text`` is a name."""
    try:
        return ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
