"""How a request's JSON body is read: bounded and strict, before the schemas see it.

flask-openapi3 validates what ``request.get_json`` returns, so the API's request class
reads the body here: 413 for one of ``MAX_BODY_BYTES`` or more (also when it comes
chunked), 400 for one that is not JSON (``NaN`` included), is nested past Python's limit
or is not an object. An empty body is an empty object.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import ApiError

# The largest honest body, a full batch of the longest URLs and item ids, is about 250 KB.
MAX_BODY_BYTES = 1024 * 1024


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class JsonBodyRequest(Request):
    """The API's request class (with ``MAX_CONTENT_LENGTH = MAX_BODY_BYTES``)."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The body as a JSON object, whatever ``silent`` asks: a body the API cannot take is the client's error."""
        data = self.get_data()
        # Flask refuses a Content-Length over the limit but cuts a chunked body there: one that reached it is too large.
        if len(data) >= MAX_BODY_BYTES:
            raise RequestEntityTooLarge()
        if not data.strip():
            return {}
        if not self.is_json:
            raise ApiError(400, "bad_request", "the body must be JSON (Content-Type: application/json)")
        try:
            body = json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to be an honest request
            raise ApiError(400, "bad_request", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        return body
