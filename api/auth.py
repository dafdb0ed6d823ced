"""Who may call what: API keys, their scopes, and a per-key limit on submissions.

**When auth is on.** Always once any key was made (revoking keys never opens the API
again), and always where ``keys_required``: ``API_KEYS_REQUIRED``, a ``HOST`` that is not
loopback, or a cloud role; such a start with no key refuses (``start_notice``).
Otherwise, on loopback with no key made, the API is open and says so at start-up.

**Keys.** ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. No key, or one that is
unknown or revoked: 401. A key without the route's scope: 403. Scopes nest,
``read`` ⊂ ``write`` ⊂ ``admin`` (``infra.keys.SCOPES``).

**A route's scope** comes from its method unless it declares one:

- ``GET``/``HEAD``: ``read``; ``POST``/``PUT``/``PATCH``: ``write``; ``DELETE``: ``admin``;
- ``@requires("admin")`` (or any scope) overrides it, e.g. a ``POST`` only admins may make;
- ``@public`` opens a route to everyone (health, the OpenAPI document and its page);
- ``@submission`` marks a route that creates work: it needs ``write`` and counts against
  the key's token bucket (``SUBMISSIONS_PER_MINUTE``, ``SUBMISSION_BURST``; 429 with
  ``Retry-After`` when empty).

Put the decorator under the route's: ``@bp.post(...)`` then ``@requires("admin")`` then
``def``. The check runs before every request (``install``), so a new route is guarded
without a word, and ``document_scopes`` writes each operation's scope into the OpenAPI
document from the same declarations.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, request

from api.errors import ApiError
from htbase.config import ConfigError, Settings
from infra.identity import uses_google
from infra.keys import SCOPES, ApiKeys, KeyInfo

View = TypeVar("View", bound=Callable[..., Any])
METHOD_SCOPES = {"GET": "read", "HEAD": "read", "POST": "write", "PUT": "write", "PATCH": "write", "DELETE": "admin"}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer htb_…`"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
OPEN = "open"  # the declared scope of a public route
CREATE_ONE = "create one with `htbase keys create --name NAME --scope admin` (against the same DATABASE_URL)"


def requires(scope: str) -> Callable[[View], View]:
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def declare(view: View) -> View:
        view.scope = scope  # type: ignore[attr-defined]
        return view

    return declare


def public(view: View) -> View:
    view.scope = OPEN  # type: ignore[attr-defined]
    return view


def submission(view: View) -> View:
    view.submission = True  # type: ignore[attr-defined]
    return requires("write")(view)


def _declared(view: Callable, name: str) -> Any:
    """An attribute set by the decorators above, on the view or on the function it wraps."""
    return getattr(view, name, None) or getattr(getattr(view, "__wrapped__", None), name, None)


def scope_of(view: Callable, method: str) -> str | None:
    """The scope a call needs; None: anyone may make it."""
    scope = _declared(view, "scope") or METHOD_SCOPES.get(method)
    return None if scope == OPEN else scope


def keys_required(settings: Settings) -> bool:
    return settings.api_keys_required or not _loopback(settings.host) or uses_google(settings)


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def start_notice(settings: Settings, keys: ApiKeys) -> str:
    """The start-up log's line on access; ``ConfigError`` where keys are required and none exists."""
    if keys.any_made():
        return "API keys: every request but health and the API's document needs one"
    if keys_required(settings):
        reason = (
            "API_KEYS_REQUIRED is on"
            if settings.api_keys_required
            else f"HOST={settings.host} is not loopback"
            if not _loopback(settings.host)
            else "this is a cloud role"
        )
        raise ConfigError(f"API keys are required ({reason}) and none exists: {CREATE_ONE}")
    return f"no API key exists: the API is open to anyone who can reach {settings.host}:{settings.port}; {CREATE_ONE}"


class TokenBuckets:
    """One bucket per key: ``burst`` tokens, refilled at ``per_minute``; a submission takes one."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = per_minute / 60.0, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key prefix -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, name: str) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(name, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens < 1:
                self._buckets[name] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[name] = (tokens - 1, now)
            return 0.0


class Gate:
    """The check before each request: whether auth is on, whose key this is, and what it may do."""

    def __init__(self, keys: ApiKeys, settings: Settings) -> None:
        self.keys, self.required = keys, keys_required(settings)
        self.buckets = TokenBuckets(settings.submissions_per_minute, settings.submission_burst)

    def on(self) -> bool:
        if not self.required and self.keys.any_made():
            self.required = True  # a key was made: from now on, every caller needs one
        return self.required

    def check(self) -> None:
        view = current_app.view_functions.get(request.endpoint or "")
        if view is None:  # no such route: a 404 or 405 follows
            return
        scope = scope_of(view, request.method)
        if scope is None or not self.on():
            return
        key = self._key()
        if not key.grants(scope):
            raise ApiError(
                403, "forbidden", f"this key's scope is {key.scope}; {request.method} {request.path} needs {scope}"
            )
        if _declared(view, "submission") and (wait := self.buckets.take(key.prefix)):
            raise ApiError(
                429,
                "rate_limited",
                f"key {key.prefix} is over its submission rate; retry in {math.ceil(wait)} s",
                {"Retry-After": str(math.ceil(wait))},
            )

    def _key(self) -> KeyInfo:
        bearer = re.fullmatch(r"Bearer\s+(\S+)\s*", request.headers.get("Authorization", ""), re.IGNORECASE)
        presented = bearer[1] if bearer else request.headers.get("X-API-Key", "").strip()
        if not presented and request.endpoint == "feed.feed":  # feed readers send no headers (api/feed.py)
            presented = request.args.get("key", "").strip()
        challenge = {"WWW-Authenticate": 'Bearer realm="htbase"'}
        if not presented:
            raise ApiError(
                401,
                "unauthorized",
                "an API key is required: send Authorization: Bearer KEY or X-API-Key: KEY",
                challenge,
            )
        key = self.keys.find(presented)
        if key is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key", challenge)
        return key


def install(app: Flask, gate: Gate) -> None:
    app.extensions["htbase.gate"] = gate
    app.before_request(gate.check)


def document_scopes(app: Flask, document: dict[str, Any]) -> dict[str, Any]:
    """The document with each operation's security: the scope it needs, or none for a public one."""
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^<:>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is None:
                continue
            view = app.view_functions[rule.endpoint]
            scope = scope_of(view, method)
            if scope is None:
                operation["security"] = []
                continue
            operation["security"] = [{name: [scope]} for name in SECURITY_SCHEMES]
            operation["responses"].setdefault("401", {"description": "no key, or an unknown or revoked one", **error})
            operation["responses"].setdefault("403", {"description": f"the key lacks the {scope} scope", **error})
            if _declared(view, "submission"):
                operation["responses"].setdefault(
                    "429",
                    {
                        "description": "over the key's submission rate",
                        **error,
                        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
                    },
                )
    return document
