"""Every error the API answers is JSON ``{"error": {"code", "message"}}`` (``schemas.ErrorBody``).

Handlers raise ``ApiError``; a request the schemas refuse (pydantic's ``ValidationError``)
answers 400 with the code its field stands for; a database that does not answer is a 503
(nothing was written); anything unforeseen is a logged 500.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from infra.storage import ObjectNotFound

logger = logging.getLogger("htbase.api")

# Codes a validator in ``schemas`` raises itself (as the type of a PydanticCustomError).
OWN_CODES = frozenset({"unknown_archiver", "batch_too_large"})
# Any other complaint about these fields (missing, not a string, too long) carries their code.
FIELD_CODES = {"url": "invalid_url", "webhook_url": "invalid_webhook_url"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def validation_error(exc: ValidationError) -> Response:
    """A request the schemas refuse, named by its first complaint (flask-openapi3's callback)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    names = [part for part in error["loc"] if isinstance(part, str)]
    code = error["type"] if error["type"] in OWN_CODES else FIELD_CODES.get(names[-1] if names else "", "bad_request")
    where = ".".join(str(part) for part in error["loc"])
    return error_response(400, code, f"'{where}': {error['msg']}" if where else error["msg"])


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def database_down(exc: Exception) -> Response:
        logger.error("database unavailable: %s", exc)
        return error_response(503, "unavailable", "the database is unavailable; nothing was written, try again")

    @app.errorhandler(ObjectNotFound)
    def file_missing(exc: ObjectNotFound) -> Response:
        logger.error("artifact file missing from storage: %s", exc)
        return error_response(404, "not_found", "the artifact file is missing from storage")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description or exc.name)

    @app.errorhandler(Exception)
    def crashed(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(500, "internal", "internal error; the request was logged")
