"""What a handler reaches from its request: the process's ``Runtime`` and API keys, the caller's request id."""

from __future__ import annotations

import re

from flask import Flask, current_app, request

from infra.keys import ApiKeys
from infra.runtime import Runtime

NOT_IN_REQUEST_IDS = re.compile(r"[^\x21-\x7e]")  # all but printable ASCII


def attach(app: Flask, runtime: Runtime, keys: ApiKeys) -> None:
    app.extensions["htbase.runtime"], app.extensions["htbase.keys"] = runtime, keys


def runtime() -> Runtime:
    return current_app.extensions["htbase.runtime"]


def api_keys() -> ApiKeys:
    return current_app.extensions["htbase.keys"]


def request_id() -> str:
    """The caller's X-Request-Id, kept to what any database stores and any log shows."""
    return NOT_IN_REQUEST_IDS.sub("", request.headers.get("X-Request-Id", ""))[:64]
