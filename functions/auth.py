"""Who may push to a worker service.

* Cloud (``PUSH_AUDIENCE`` set): Pub/Sub (or Cloud Scheduler) signs each push
  with a Google OIDC token (``Authorization: Bearer``). It must verify against
  Google's published certificates and carry our one audience, a Google issuer
  and the verified email of an allowed service account (``PUSH_SERVICE_ACCOUNT``
  and ``PUSH_ALLOWED_SERVICE_ACCOUNTS``: the push subscriptions' identity, the
  scheduler's).
* Emulator (``PUSH_AUTH_TOKEN`` set): the Pub/Sub emulator sends no
  Authorization header, so the push endpoint URL carries a shared token
  (``?token=``); a ``Bearer`` header with the same token is accepted too.
* Neither: every push is refused. A worker service is never open.

``verify`` takes any Flask request, so other internal endpoints can reuse it.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping

import requests
from flask import Request
from google.auth import exceptions as auth_exceptions
from google.auth import jwt

from htbase.config import ConfigError, Settings
from htbase.logs import log

logger = logging.getLogger("htbase.push")

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
CLOCK_SKEW_S = 10  # tolerated drift between Google's clock and ours
DEFAULT_CERTS_MAX_AGE_S = 300.0  # when the certs response has no Cache-Control max-age
FAILED_FETCH_RETRY_S = 60.0  # after a failed refresh, keep the old certs this long before trying again


class PushUnauthorized(Exception):
    """The request is not an authentic push; ``reason`` says why (it never contains a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _bearer(request: Request) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


class PushAuthenticator:
    """``verify(request)`` returns if the push is authentic and raises PushUnauthorized otherwise."""

    def verify(self, request: Request) -> None:
        raise NotImplementedError

    @staticmethod
    def from_settings(settings: Settings) -> PushAuthenticator:
        if settings.push_audience:
            allowed = frozenset(filter(None, (settings.push_service_account, *settings.push_allowed_service_accounts)))
            if not allowed:
                # Without one any Google service account could mint a token for our audience.
                raise ConfigError(
                    "PUSH_AUDIENCE needs PUSH_SERVICE_ACCOUNT or PUSH_ALLOWED_SERVICE_ACCOUNTS "
                    "(the identities whose pushes are accepted)"
                )
            return GoogleOidcAuthenticator(settings.push_audience, allowed, GoogleCerts(settings.oidc_certs_url))
        if settings.push_auth_token:
            return SharedTokenAuthenticator(settings.push_auth_token)
        return RefuseAll()


class RefuseAll(PushAuthenticator):
    def verify(self, request: Request) -> None:
        raise PushUnauthorized("push authentication is not configured: set PUSH_AUDIENCE or PUSH_AUTH_TOKEN")


class SharedTokenAuthenticator(PushAuthenticator):
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def verify(self, request: Request) -> None:
        presented = request.args.get("token") or _bearer(request)
        if not presented:
            raise PushUnauthorized("no push token: expected ?token= or Authorization: Bearer")
        # Constant time, on bytes: compare_digest refuses non-ASCII str.
        if not hmac.compare_digest(presented.encode(), self._token):
            raise PushUnauthorized("wrong push token")


class GoogleOidcAuthenticator(PushAuthenticator):
    def __init__(self, audience: str, service_accounts: frozenset[str], certs: GoogleCerts) -> None:
        self.audience, self.service_accounts, self.certs = audience, service_accounts, certs

    def verify(self, request: Request) -> None:
        token = _bearer(request)
        if not token:
            raise PushUnauthorized("no OIDC token: expected Authorization: Bearer <Google-signed JWT>")
        if token.count(".") != 2:  # checked here so that a stray secret is never echoed in an error
            raise PushUnauthorized("the bearer credential is not a JWT")
        try:
            # google.oauth2.id_token.verify_token does exactly this for Google's PEM certs, but
            # fetches them on every call; ours come from a cache.
            claims = jwt.decode(
                token, certs=self.certs.get(), audience=self.audience, clock_skew_in_seconds=CLOCK_SKEW_S
            )
        except (ValueError, TypeError, auth_exceptions.GoogleAuthError) as exc:
            raise PushUnauthorized(f"invalid OIDC token: {str(exc)[:200]}") from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise PushUnauthorized(f"OIDC token issuer {claims.get('iss')!r} is not Google")
        if claims.get("email") not in self.service_accounts:
            raise PushUnauthorized(f"OIDC token is for {claims.get('email')!r}, not an allowed service account")
        if claims.get("email_verified") is not True:
            raise PushUnauthorized("OIDC token email is not verified")


class GoogleCerts:
    """Google's signing certificates ({key id: PEM}), fetched once and reused until their max-age.

    If a refresh fails, the certs we have stay in use for another minute: Google
    keeps a key listed well past the tokens it signed.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url, self.timeout_s, self._clock = url, timeout_s, clock
        self._certs: Mapping[str, str] = {}
        self._expires = float("-inf")
        self._lock = threading.Lock()
        self._session = requests.Session()

    def get(self) -> Mapping[str, str]:
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                self._refresh(now)
            return self._certs

    def _refresh(self, now: float) -> None:
        try:
            response = self._session.get(self.url, timeout=self.timeout_s)
            response.raise_for_status()
            certs = response.json()
            if not isinstance(certs, dict) or not certs:
                raise ValueError("expected a JSON object of {key id: PEM certificate}")
        except (requests.RequestException, ValueError) as exc:
            if not self._certs:
                raise PushUnauthorized(f"cannot fetch the OIDC signing certificates from {self.url}: {exc}") from None
            log(
                logger,
                logging.WARNING,
                "OIDC certificate refresh failed; keeping the ones we have",
                url=self.url,
                error=str(exc),
                retry_in_s=FAILED_FETCH_RETRY_S,
            )
            self._expires = now + FAILED_FETCH_RETRY_S
            return
        self._certs, self._expires = certs, now + _max_age(response.headers.get("Cache-Control", ""))


def _max_age(cache_control: str) -> float:
    found = re.search(r"max-age=(\d+)", cache_control)
    return float(found.group(1)) if found else DEFAULT_CERTS_MAX_AGE_S
