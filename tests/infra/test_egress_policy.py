"""The egress policy: which resolved addresses archivers may reach, and why not.
Literal addresses and a stand-in resolver: nothing is contacted."""

from __future__ import annotations

import socket

import pytest

from htbase.config import Settings
from htbase.urls import InvalidURL
from infra.egress.policy import SETTING_HINT, EgressPolicy, EgressRefused, HostNotFound, ResolutionError
from tests.egress_fixtures import fake_dns


@pytest.mark.parametrize(
    "host, message",
    [
        ("127.0.0.1", "refused: 127.0.0.1 (loopback)"),
        ("localhost", "refused: 'localhost' resolves to 127.0.0.1 (loopback)"),
        ("2130706433", "refused: '2130706433' resolves to 127.0.0.1 (loopback)"),  # 127.0.0.1 as one number
        ("10.20.30.40", "refused: 10.20.30.40 (private)"),
        ("172.16.5.4", "refused: 172.16.5.4 (private)"),
        ("192.168.1.1", "refused: 192.168.1.1 (private)"),
        ("169.254.169.254", "refused: 169.254.169.254 (cloud metadata)"),
        ("169.254.10.20", "refused: 169.254.10.20 (link-local)"),
        ("100.64.0.1", "refused: 100.64.0.1 (shared address space)"),
        ("0.0.0.0", "refused: 0.0.0.0 (unspecified)"),
        ("224.0.0.251", "refused: 224.0.0.251 (multicast)"),
        ("240.0.0.1", "refused: 240.0.0.1 (reserved)"),
        ("::1", "refused: ::1 (loopback)"),
        ("[::1]", "refused: ::1 (loopback)"),
        ("::", "refused: :: (unspecified)"),
        ("::ffff:127.0.0.1", "refused: ::ffff:127.0.0.1 (loopback, 127.0.0.1 embedded in IPv6)"),
        ("::ffff:10.0.0.1", "refused: ::ffff:10.0.0.1 (private, 10.0.0.1 embedded in IPv6)"),
        ("64:ff9b::a9fe:a9fe", "refused: 64:ff9b::a9fe:a9fe (cloud metadata, 169.254.169.254 embedded in IPv6)"),
        ("fd00::1", "refused: fd00::1 (private)"),
        ("fe80::1", "refused: fe80::1 (link-local)"),
        ("ff02::1", "refused: ff02::1 (multicast)"),
    ],
)
def test_policy_refuses_non_public_addresses(host, message):
    with pytest.raises(EgressRefused) as raised:
        EgressPolicy().resolve(host, 80)
    assert str(raised.value) == f"{message}; {SETTING_HINT}"  # names the settings that would allow it


@pytest.mark.parametrize("host", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.216.34"])
def test_policy_allows_public_addresses(host):
    # Literal addresses: resolution happens locally and nothing is contacted.
    assert EgressPolicy().resolve(host, 443) == [host]


def test_check_url_validates_then_resolves():
    policy = EgressPolicy()
    assert policy.check_url("HTTPS://93.184.216.34/page#x") == "https://93.184.216.34/page"
    with pytest.raises(EgressRefused, match=r"refused: ::1 \(loopback\)"):
        policy.check_url("http://[::1]:8080/")
    with pytest.raises(InvalidURL, match="got 'file'"):
        policy.check_url("file:///etc/passwd")


def test_allow_private_allows_everything_but_cloud_metadata():
    policy = EgressPolicy(allow_private=True)
    for host in ("127.0.0.1", "localhost", "10.0.0.1", "192.168.0.1", "::1", "fd00::1"):
        assert policy.resolve(host, 80)
    # A stray ALLOW_PRIVATE_URLS in the cloud still cannot reach credentials.
    with pytest.raises(EgressRefused, match="cloud metadata"):
        policy.resolve("169.254.169.254", 80)
    assert EgressPolicy(allow_private=True, allow_cidrs=["169.254.169.254/32"]).resolve("169.254.169.254", 80)


def test_allow_cidrs_opens_only_the_listed_ranges():
    policy = EgressPolicy(allow_cidrs=["127.0.0.2/32", "10.1.0.0/16"])
    assert policy.resolve("127.0.0.2", 80) == ["127.0.0.2"]
    assert policy.resolve("10.1.200.3", 80) == ["10.1.200.3"]
    with pytest.raises(EgressRefused, match=r"127\.0\.0\.1 \(loopback\)"):
        policy.resolve("127.0.0.1", 80)
    with pytest.raises(EgressRefused, match=r"10\.2\.0\.1 \(private\)"):
        policy.resolve("10.2.0.1", 80)


def test_policy_from_settings():
    policy = EgressPolicy.from_settings(Settings(allow_private_urls=False, egress_allow_cidrs=("127.0.0.2/32",)))
    assert policy.resolve("127.0.0.2", 80) == ["127.0.0.2"]
    assert EgressPolicy.from_settings(Settings(allow_private_urls=True)).resolve("127.0.0.1", 80)


def test_a_name_is_refused_if_any_of_its_addresses_is_private(monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "mixed.example":
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(EgressRefused, match=r"refused: 'mixed.example' resolves to 10\.0\.0\.7 \(private\)"):
        EgressPolicy().resolve("mixed.example", 80)


def test_a_name_that_does_not_exist_is_not_found_not_refused(monkeypatch):
    fake_dns(monkeypatch, {"gone.example": ["NXDOMAIN"]})
    with pytest.raises(HostNotFound, match="host not found: 'gone.example' \\(Name or service not known\\)"):
        EgressPolicy().resolve("gone.example", 80)


def test_a_resolver_that_fails_is_a_resolution_error_that_may_pass(monkeypatch):
    fake_dns(monkeypatch, {"flaky.example": ["SERVFAIL"]})
    with pytest.raises(ResolutionError, match="cannot resolve 'flaky.example'") as raised:
        EgressPolicy().resolve("flaky.example", 80)
    assert not isinstance(raised.value, HostNotFound)
