"""URL rules: what validate_url accepts and how it says no, and when two URLs are the same page."""

from __future__ import annotations

import hashlib

import pytest

from htbase.urls import InvalidURL, normalize_url, url_hash, validate_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("HTTP://Example.COM:80/a/b?q=1&r=2#section", "http://example.com/a/b?q=1&r=2"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/x?", "https://example.com:8443/x"),
        ("http://bücher.example/straße", "http://xn--bcher-kva.example/straße"),
        ("http://[0:0:0:0:0:0:0:1]:8080/", "http://[::1]:8080/"),
    ],
)
def test_validate_url_accepts_http_and_normalizes(url, expected):
    assert validate_url(url) == expected
    assert normalize_url(url) == expected


@pytest.mark.parametrize(
    "url, expected",
    [
        ("example.org", "https://example.org/"),
        ("Example.org/page?q=1", "https://example.org/page?q=1"),
        ("example.org:8080", "https://example.org:8080/"),
        ("localhost:8080/x#top", "https://localhost:8080/x"),
    ],
)
def test_a_bare_host_means_https(url, expected):
    assert validate_url(url) == expected


@pytest.mark.parametrize(
    "url, message",
    [
        ("", "a URL is required"),
        ("//example.com/page", "not an absolute URL (expected http:// or https://): '//example.com/page'"),
        ("mailto:someone@example.com", "only http and https URLs can be archived, got 'mailto'"),
        ("not a url", "URL contains whitespace or control characters"),
        ("http://exa\nmple.com/", "URL contains whitespace or control characters"),
        ("file:///etc/passwd", "only http and https URLs can be archived, got 'file'"),
        ("javascript:alert(1)", "only http and https URLs can be archived, got 'javascript'"),
        ("ftp://example.com/file", "only http and https URLs can be archived, got 'ftp'"),
        ("http:///no-host", "URL has no host"),
        ("https://:443/", "URL has no host"),
        ("http://user:secret@example.com/", "URLs with credentials (user:password@) are not accepted"),
        ("http://example.com:99999/", "invalid port in 'example.com:99999'"),
        ("http://example.com:0/", "invalid port in 'example.com:0'"),
        ("http://[::1/", "not a valid URL (malformed host): 'http://[::1/'"),
        ("http://exa<mple.com/", "invalid host name 'exa<mple.com'"),
        ("http://example.com/" + "a" * 2100, "URL is longer than 2048 characters"),
    ],
)
def test_validate_url_rejects_with_a_clear_message(url, message):
    with pytest.raises(InvalidURL) as raised:
        validate_url(url)
    assert str(raised.value) == message
    assert isinstance(raised.value, ValueError)  # callers may catch ValueError


def test_url_hash_is_the_same_for_equivalent_urls():
    assert url_hash("HTTP://Example.com:80/a?x=1#top") == url_hash("http://example.com/a?x=1")
    assert url_hash("http://example.com/a?x=1") == hashlib.sha256(b"http://example.com/a?x=1").hexdigest()
    assert url_hash("http://example.com/a?x=1") != url_hash("http://example.com/a?x=2")
