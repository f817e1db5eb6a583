"""Which webhook destinations are public (core.destinations), and the pinned URL."""

from __future__ import annotations

import ipaddress

import pytest

from tracker.core import destinations as d

PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001:82b::200e"]
INTERNAL = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "0.0.0.0",
    "100.64.0.1",
    "224.0.0.251",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.10",
    "::1",
    "::",
    "fe80::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::1",
    "2001:0::1",
]


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_pass(text: str) -> None:
    assert d.is_public(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", INTERNAL)
def test_internal_addresses_in_every_spelling_are_refused(text: str) -> None:
    assert not d.is_public(ipaddress.ip_address(text))
    with pytest.raises(d.Refused) as refused:
        d.vet([text], ())
    assert refused.value.reason == d.BLOCKED_ADDRESS


def test_the_allow_list_admits_its_networks_only() -> None:
    allowed = d.parse_networks("10.0.0.0/8, 127.0.0.1/32 fd00::/8")
    assert [str(a) for a in d.vet(["10.1.2.3", "127.0.0.1"], allowed)] == ["10.1.2.3", "127.0.0.1"]
    assert d.vet(["::ffff:10.9.9.9"], allowed)  # the IPv4 it carries is allowed
    with pytest.raises(d.Refused):
        d.vet(["127.0.0.2"], allowed)
    with pytest.raises(ValueError):
        d.parse_networks("10.0.0.0/33")


def test_one_internal_answer_refuses_the_whole_name() -> None:
    with pytest.raises(d.Refused):
        d.vet(["93.184.216.34", "10.0.0.1"], ())
    with pytest.raises(d.Refused) as nothing:
        d.vet([], ())
    assert nothing.value.reason == d.UNRESOLVED


def test_userinfo_and_other_schemes_are_refused() -> None:
    with pytest.raises(d.Refused) as userinfo:
        d.target("http://user:pw@example.com/h")
    assert userinfo.value.reason == d.BLOCKED_USERINFO
    with pytest.raises(d.Refused):
        d.target("http://@example.com/h")
    with pytest.raises(d.Refused):
        d.target("file:///etc/passwd")
    with pytest.raises(d.Refused):
        d.target("http://example.com:99999/")


def test_the_pinned_url_keeps_path_query_and_port() -> None:
    t = d.target("https://Hooks.Example.com/in/x?a=1")
    assert (t.host, t.port, t.host_header) == ("hooks.example.com", 443, "Hooks.Example.com")
    v4 = d.pinned_url(t, ipaddress.ip_address("93.184.216.34"))
    assert v4 == "https://93.184.216.34:443/in/x?a=1"
    t6 = d.target("http://[2606:4700::1]:8080/h")
    assert d.pinned_url(t6, ipaddress.ip_address("2606:4700::1")) == "http://[2606:4700::1]:8080/h"


def test_an_international_name_is_sent_as_ascii() -> None:
    t = d.target("https://bücher.example:8443/h")
    assert t.host == "bücher.example" and t.host_header == "xn--bcher-kva.example:8443"
