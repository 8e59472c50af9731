"""engine.outbound: a server-side request reaches public addresses only, unless allowed."""

from __future__ import annotations

import ipaddress

import pytest

from engine.outbound import Destinations, RefusedDestination, UnknownHost


def resolving(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.10", "private"), ("172.16.5.4", "private"),
    ("169.254.169.254", "link-local"),  # the cloud metadata service
    ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"), ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"),  # carrier-grade NAT
    ("::1", "loopback"), ("fe80::1", "link-local"), ("fd00::5", "private"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6 is judged as the IPv4 address
])
def test_non_public_addresses_are_refused_with_what_they_are(address, kind):
    with pytest.raises(RefusedDestination) as refused:
        Destinations(resolve=resolving(address)).address_for("https://feeds.example.com/rss.xml")
    shown = ipaddress.ip_address(address)  # as Python writes it: ::ffff:7f00:1 for ::ffff:127.0.0.1
    assert str(refused.value).startswith(f"feeds.example.com ({shown}) is a {kind} address")


def test_a_public_address_is_used_and_one_private_address_among_several_is_enough_to_refuse():
    assert Destinations(resolve=resolving("93.184.215.14")).address_for("http://feeds.example.com/") == "93.184.215.14"
    with pytest.raises(RefusedDestination, match="10.0.0.7"):
        Destinations(resolve=resolving("93.184.215.14", "10.0.0.7")).address_for("http://feeds.example.com/")


def test_allow_hosts_takes_names_addresses_and_networks():
    allowed = Destinations.allowing(["Intranet.Shop.Local.", "10.0.0.0/8", "192.168.1.5"],
                                    resolve=resolving("10.9.8.7"))
    assert allowed.address_for("http://intranet.shop.local/feed") == "10.9.8.7"
    assert allowed.address_for("http://other.shop.local/feed") == "10.9.8.7"  # in 10.0.0.0/8
    lan = Destinations.allowing(["192.168.1.5"], resolve=resolving("192.168.1.6"))
    with pytest.raises(RefusedDestination):
        lan.address_for("http://printer.local/")


def test_only_http_and_https_urls_and_names_that_resolve():
    for url in ("file:///etc/passwd", "gopher://127.0.0.1:25/", "ftp://feeds.example.com/", "http:///nohost"):
        with pytest.raises(RefusedDestination, match="only http and https"):
            Destinations(resolve=resolving("93.184.215.14")).address_for(url)

    def no_such_host(host, port):
        raise OSError(-2, "Name or service not known")

    with pytest.raises(UnknownHost, match="feeds.shop.invalid: Name or service not known"):
        Destinations(resolve=no_such_host).address_for("http://feeds.shop.invalid/")
