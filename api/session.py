"""The web page's sign-in: a browser holds its API key in a cookie, and every form carries a CSRF token.

Signing in with a key sets ``htbase_key``: HttpOnly (no script reads it),
SameSite=Strict (no other site's page sends it), Secure over HTTPS, for
``SESSION_DAYS``. ``CookieKeys`` hands that key to the API's gate as if the
browser had sent ``X-API-Key``, so the page is behind the same keys and
scopes as the API, and revoking a key signs its browsers out.

CSRF: each browser gets a random ``htbase_csrf`` cookie (HttpOnly,
SameSite=Strict); every form posts it back as ``csrf_token``, and a script
of the page's own sends it as ``X-CSRF-Token``. An unsafe request that the
cookie authenticates, or any form post to the page, must carry it; another
site can neither read the cookie nor make a browser send it.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any

from flask import Request, Response, request

KEY_COOKIE, CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER = "htbase_key", "htbase_csrf", "csrf_token", "X-CSRF-Token"
SESSION_DAYS = 30
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CookieKeys:
    """WSGI middleware: a request without a key header but with the key cookie presents the cookie's key;
    an unsafe API request it authenticates must carry the CSRF header (403 otherwise)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        cookies = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        key = cookies.get(KEY_COOKIE)
        if key and not environ.get("HTTP_AUTHORIZATION") and not environ.get("HTTP_X_API_KEY"):
            environ["HTTP_X_API_KEY"] = key.value
            environ["htbase.cookie_auth"] = True
            unsafe = environ.get("REQUEST_METHOD", "GET") not in SAFE_METHODS
            if unsafe and environ.get("PATH_INFO", "").startswith("/api/"):
                token = cookies.get(CSRF_COOKIE)
                if not token or not hmac.compare_digest(token.value, environ.get("HTTP_X_CSRF_TOKEN", "")):
                    start_response("403 FORBIDDEN", [("Content-Type", "application/json")])
                    return [
                        b'{"error": {"code": "csrf", "message": "a request the sign-in cookie authenticates '
                        b'must carry the X-CSRF-Token header"}}'
                    ]
        return self.app(environ, start_response)


def csrf_token() -> str:
    """This browser's token (a new one, set by ``keep_csrf_cookie``, on its first visit)."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request, "_new_csrf", None)
    if not token:
        token = request._new_csrf = secrets.token_urlsafe(32)  # type: ignore[attr-defined]
    return token


def csrf_valid(req: Request) -> bool:
    sent = req.form.get(CSRF_FIELD) or req.headers.get(CSRF_HEADER, "")
    token = req.cookies.get(CSRF_COOKIE, "")
    return bool(token) and hmac.compare_digest(token, sent)


def _secure() -> bool:
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "") == "https"


def keep_csrf_cookie(response: Response) -> Response:
    new = getattr(request, "_new_csrf", None)
    if new:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="Strict", secure=_secure(), path="/")
    return response


def sign_in(response: Response, key: str) -> Response:
    response.set_cookie(
        KEY_COOKIE, key, max_age=SESSION_DAYS * 86400, httponly=True, samesite="Strict", secure=_secure(), path="/"
    )
    return response


def sign_out(response: Response) -> Response:
    response.delete_cookie(KEY_COOKIE, path="/", httponly=True, samesite="Strict", secure=_secure())
    return response


def signed_in_by_cookie() -> bool:
    return bool(request.environ.get("htbase.cookie_auth"))
