"""What a handler reaches from the request it serves: the process's ``Runtime`` and the caller's request id."""
from __future__ import annotations

import re

from flask import Flask, current_app, request

from infra.runtime import Runtime

NOT_IN_REQUEST_IDS = re.compile(r"[^\x21-\x7e]")  # all but printable ASCII


def attach(app: Flask, runtime: Runtime) -> None:
    app.extensions["htbase.runtime"] = runtime


def runtime() -> Runtime:
    return current_app.extensions["htbase.runtime"]


def request_id() -> str:
    """The caller's X-Request-Id, kept to what any database stores and any log shows."""
    return NOT_IN_REQUEST_IDS.sub("", request.headers.get("X-Request-Id", ""))[:64]
