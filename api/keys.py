"""API keys over HTTP (the admin scope): make one, list them, revoke one. ``htbase keys`` does the same locally."""

from __future__ import annotations

from flask import Response, jsonify

from api.auth import requires
from api.context import api_keys
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import ErrorBody, KeyList, KeyPath, KeyRequest, KeyView, NewKey
from infra.documents import isoformat
from infra.keys import KeyInfo

bp = blueprint("keys", "API keys (admin)")


def key_view(info: KeyInfo) -> dict:
    return {
        "prefix": info.prefix,
        "name": info.name,
        "scope": info.scope,
        "created_at": isoformat(info.created_at),
        "revoked_at": isoformat(info.revoked_at),
    }


@bp.post("/keys", responses={201: NewKey})
@requires("admin")
def create_key(body: KeyRequest) -> Response:
    """A new key; the answer holds the key itself, shown this once."""
    info, key = api_keys().create(body.name, body.scope)
    response = jsonify({**key_view(info), "key": key})
    response.status_code = 201
    return response


@bp.get("/keys", responses={200: KeyList})
@requires("admin")
def list_keys() -> Response:
    """Every key made, revoked ones too (never the keys themselves)."""
    return jsonify({"keys": [key_view(info) for info in api_keys().list()]})


@bp.delete("/keys/<prefix>", responses={200: KeyView, 404: ErrorBody})
def revoke_key(path: KeyPath) -> Response:
    """Revoke a key: it is refused from now on."""
    info = api_keys().revoke(path.prefix)
    if info is None:
        raise ApiError(404, "not_found", f"no live key {path.prefix}")
    return jsonify(key_view(info))
