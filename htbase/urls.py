"""URL rules: which URLs htbase archives, and when two URLs are the same page.

``validate_url`` is the syntactic check the API answers 400 with;
``normalize_url``/``url_hash`` give the ledger a stable identity for a URL.
Whether a URL's host may be reached is a separate question, answered at fetch
time by the egress policy (``infra.egress.policy``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}

# ASCII controls, DEL, and any Unicode whitespace: browsers strip or encode
# these differently, so a URL carrying them has no single meaning.
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f]|\s")
_HOSTNAME = re.compile(r"^[a-z0-9_.-]+$")
# A host (and port) typed without a scheme, as people type them: "example.org", "example.org:8080/x".
_BARE_HOST = re.compile(r"[^/:?#@\[\]]+(:\d+)?([/?#]|$)")


class InvalidURL(ValueError):
    """The URL is not one htbase archives (the API answers 400)."""


def _normal_host(host: str) -> str:
    if ":" in host:  # IPv6 literal (urlsplit already dropped the brackets)
        try:
            return f"[{ipaddress.IPv6Address(host.split('%')[0]).compressed}]"
        except ValueError:
            raise InvalidURL(f"invalid IPv6 address {host!r}") from None
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidURL(f"invalid host name {host!r}") from None
    if not _HOSTNAME.match(host):
        raise InvalidURL(f"invalid host name {host!r}")
    return host


def _split(url: str):
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" IPv6 literal
        raise InvalidURL(f"not a valid URL (malformed host): {url[:100]!r}") from None
    try:
        return parts, parts.port
    except ValueError:
        raise InvalidURL(f"invalid port in {parts.netloc[:100]!r}") from None


def normalize_url(url: str) -> str:
    """Lowercase scheme and host (IDNA-encoded), drop the default port and the
    fragment, keep path and query as given."""
    parts, port = _split(url)
    scheme = parts.scheme.lower()
    netloc = _normal_host(parts.hostname or "")
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    if "@" in parts.netloc:
        netloc = f"{parts.netloc.rpartition('@')[0]}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def validate_url(url: str) -> str:
    """Check that ``url`` is an http(s) URL htbase may archive; return it
    normalized (a bare host means https). Raises ``InvalidURL`` with a message
    fit for an API client."""
    if not isinstance(url, str) or not url:
        raise InvalidURL("a URL is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"URL is longer than {MAX_URL_LENGTH} characters")
    if _UNSAFE_CHARS.search(url):
        raise InvalidURL("URL contains whitespace or control characters")
    if _BARE_HOST.match(url):
        url = f"https://{url}"
    parts, port = _split(url)
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidURL(f"not an absolute URL (expected http:// or https://): {url[:100]!r}")
    if scheme not in ALLOWED_SCHEMES:
        raise InvalidURL(f"only http and https URLs can be archived, got {scheme!r}")
    if "@" in parts.netloc:
        raise InvalidURL("URLs with credentials (user:password@) are not accepted")
    if not parts.hostname:
        raise InvalidURL("URL has no host")
    if port == 0:
        raise InvalidURL(f"invalid port in {parts.netloc[:100]!r}")
    return normalize_url(url)


def url_hash(url: str) -> str:
    """sha256 hex of the normalized URL: equal for URLs that mean the same page."""
    return hashlib.sha256(normalize_url(url).encode("utf-8")).hexdigest()
