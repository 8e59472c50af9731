"""Requests the server makes on its own (feeds; later outgoing webhooks) reach only public addresses.

A URL in a campaign file, or one a server redirects to, could otherwise point the server at
itself (its own admin pages, the database port) or at the private network behind it. Every hop
is resolved here, every address it resolves to is checked, and the connection goes to the
address that was checked, so a name that resolves differently a moment later (DNS rebinding)
cannot slip past. Exceptions are explicit: `[feeds] allow_hosts`, host names or networks.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from .errors import ValuemailError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


class RefusedDestination(ValuemailError):
    """The URL's host is not a public address and is not allowed by configuration."""


class UnknownHost(ValuemailError):
    """The URL's host name does not resolve."""


def _resolve(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _kind(address: Address) -> str | None:
    """What makes the address non-public ("loopback", "private", ...), or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


@dataclass(frozen=True)
class Destinations:
    """Where server-side requests may go: public addresses, plus these hosts and networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    resolve: Resolver = field(default=_resolve, compare=False)

    @classmethod
    def allowing(cls, entries: Iterable[str], *, resolve: Resolver = _resolve) -> "Destinations":
        """From `allow_hosts` entries: a host name, an IP address or a network such as 10.0.0.0/8."""
        hosts, networks = set(), []
        for entry in entries:
            entry = entry.strip().lower().rstrip(".")
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks), resolve)

    def address_for(self, url: str) -> str:
        """The checked address to connect to for `url`; RefusedDestination if it may not be reached."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RefusedDestination(f"only http and https URLs can be fetched, not {url!r}")
        host = parts.hostname.lower().rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolve(host, port)]
        except (OSError, UnicodeError) as exc:
            raise UnknownHost(f"{host}: {getattr(exc, 'strerror', None) or exc}") from None
        if not found:
            raise UnknownHost(f"{host}: no address")
        if host not in self.hosts:
            for address in found:
                kind = _kind(address)
                if kind and not any(address in network for network in self.networks):
                    shown = host if host == str(address) else f"{host} ({address})"
                    raise RefusedDestination(f"{shown} is a {kind} address; add it to [feeds] allow_hosts "
                                             "to fetch from it")
        return str(found[0])


class _Pinned(HTTPAdapter):
    """Connects to one checked address, while TLS (SNI, certificate) and Host stay the URL's host."""

    def __init__(self, host: str):
        self._host = host
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        kwargs.update(server_hostname=self._host, assert_hostname=self._host)
        super().init_poolmanager(*args, **kwargs)


def get(url: str, *, destinations: Destinations, headers: dict[str, str], timeout, stream: bool = True,
        max_redirects: int = MAX_REDIRECTS) -> tuple[requests.Response, str]:
    """GET `url`, following redirects hop by hop, each hop's address checked; (response, final URL)."""
    seen = 0
    while True:
        address = destinations.address_for(url)
        parts = urlsplit(url)
        literal = f"[{address}]" if ":" in address else address
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        session = requests.Session()
        session.trust_env = False  # no proxy from the environment: it would connect for us, unchecked
        session.mount(f"{parts.scheme}://", _Pinned(parts.hostname))
        host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        try:
            response = session.get(urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
                                   headers={**headers, "Host": host_header}, timeout=timeout, stream=stream,
                                   allow_redirects=False)
        except BaseException:
            session.close()
            raise
        location = response.headers.get("Location")
        if response.status_code not in _REDIRECTS or not location:
            return response, url
        response.close()
        seen += 1
        if seen > max_redirects:
            raise requests.TooManyRedirects(f"more than {max_redirects} redirects")
        url = urljoin(url, location)
