"""Who may reach the bot's own channels: this machine's addresses."""

from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """Whether an address is this machine's own (127.0.0.0/8, ::1, or IPv4 mapped into IPv6)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_host(host: str) -> bool:
    """Whether a listening host setting keeps the server on this machine."""
    return host == "localhost" or is_loopback(host)
