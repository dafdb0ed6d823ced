"""Which addresses archivers may connect to: public ones only, by default.

The policy resolves a host once and judges every address it answers, so the
caller can connect to exactly what was vetted.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from htbase.urls import DEFAULT_PORTS, validate_url


class EgressRefused(Exception):
    """The URL's host resolves to an address archivers may not reach."""


class ResolutionError(OSError):
    """The host does not resolve (could be transient; not a refusal)."""


class HostNotFound(ResolutionError):
    """The name does not exist (the DNS said so, or it is no valid host name): asking again will not help."""


# getaddrinfo's answers for a name that does not exist, as opposed to a resolver
# that failed to answer (EAI_AGAIN, EAI_FAIL): those may work next time.
_NO_SUCH_NAME = frozenset(code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code)


_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = frozenset(ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))

# First match names the reason. ``is_global`` alone misses multicast and
# differs between Python releases, hence the explicit rules before it.
_METADATA_RULE = ("cloud metadata", lambda ip: ip in _METADATA)
_RULES = (
    _METADATA_RULE,
    ("unspecified", lambda ip: ip.is_unspecified),
    ("loopback", lambda ip: ip.is_loopback),
    ("link-local", lambda ip: ip.is_link_local),
    ("multicast", lambda ip: ip.is_multicast),
    ("shared address space", lambda ip: ip in _CGNAT),
    ("reserved", lambda ip: ip.is_reserved),
    ("private", lambda ip: ip.is_private),
    ("site-local", lambda ip: ip.version == 6 and ip.is_site_local),
    ("not globally routable", lambda ip: not ip.is_global),
)


def _effective(ip):
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4): that is
    where packets end up, so that is what gets judged."""
    if ip.version == 6:
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour:
            return ip.sixtofour
    return ip


# Said with every refusal: which setting would allow the address.
SETTING_HINT = "EGRESS_ALLOW_CIDRS allows a range (ALLOW_PRIVATE_URLS=1 every private address but cloud metadata)"


class EgressPolicy:
    """Which resolved addresses archivers may connect to.

    ``allow_private`` (a switch for local runs and tests) lifts every rule but
    one: cloud metadata endpoints stay refused unless ``allow_cidrs`` names
    them, so a stray ALLOW_PRIVATE_URLS in the cloud cannot leak credentials.
    """

    def __init__(self, allow_private: bool = False, allow_cidrs: Sequence[str] = ()):
        self.allow_private = allow_private
        self.allow_networks = tuple(ipaddress.ip_network(c, strict=False) for c in allow_cidrs)

    @classmethod
    def from_settings(cls, settings) -> EgressPolicy:
        return cls(settings.allow_private_urls, settings.egress_allow_cidrs)

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        ip = ipaddress.ip_address(address.split("%")[0])
        inner = _effective(ip)
        if any(a in net for net in self.allow_networks for a in (ip, inner)):
            return None
        rules = (_METADATA_RULE,) if self.allow_private else _RULES
        why = next((label for label, test in rules if test(inner)), None)
        if why and inner is not ip:
            why = f"{why}, {inner} embedded in IPv6"
        return why

    def resolve(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once and return its addresses if every one of them
        may be reached; raise ``EgressRefused`` naming the first that may not."""
        host = host.strip("[]")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except UnicodeError as exc:
            raise HostNotFound(f"host not found: {host!r} is no valid host name ({exc})") from None
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_NAME:
                raise HostNotFound(f"host not found: {host!r} ({exc.strerror})") from None
            raise ResolutionError(f"cannot resolve {host!r}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            why = self.refusal(address)
            if why:
                if address == host:
                    raise EgressRefused(f"refused: {address} ({why}); {SETTING_HINT}")
                raise EgressRefused(f"refused: {host!r} resolves to {address} ({why}); {SETTING_HINT}")
        return addresses

    def check_url(self, url: str) -> str:
        """validate_url + resolve: the normalized URL, if it may be fetched now."""
        normalized = validate_url(url)
        parts = urlsplit(normalized)
        self.resolve(parts.hostname or "", parts.port or DEFAULT_PORTS[parts.scheme])
        return normalized
