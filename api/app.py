"""The public HTTP API (v2): an OpenAPI app made of one blueprint per resource.

Handlers are thin: the schemas (``api.schemas``) validate what a client sends before a handler
runs, so bad input answers 400 (413 for a body too large), never 500 or 503; a handler calls
the ledger or the store and renders the result. Modules: ``errors`` (the JSON error shape),
``bodies`` (reading a JSON body), ``auth`` (keys, scopes, the submission rate), ``openapi``
(blueprints, the document and its page), and the resources: ``submissions``, ``tasks``,
``archives``, ``summaries``, ``keys``, ``health``, ``metrics``. A new resource is a module with a
``blueprint()`` added to ``BLUEPRINTS``: validated, guarded and documented like the rest.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import OpenAPI

from api import (
    archives,
    auth,
    feed,
    health,
    items,
    keys,
    metrics,
    progress,
    search,
    submissions,
    summaries,
    tags,
    tasks,
    transfer,
    web,
)
from api.bodies import MAX_BODY_BYTES, JsonBodyRequest
from api.context import attach
from api.errors import register_error_handlers, validation_error
from api.openapi import INFO, register_docs
from api.session import CookieKeys
from infra.keys import ApiKeys
from infra.runtime import Runtime

BLUEPRINTS = (
    submissions.bp,
    tasks.bp,
    progress.bp,
    items.bp,
    archives.bp,
    summaries.bp,
    search.bp,
    tags.bp,
    transfer.bp,
    feed.bp,
    keys.bp,
    health.bp,
    metrics.bp,
)


def create_app(runtime: Runtime) -> OpenAPI:
    app = OpenAPI(
        "htbase.api", info=INFO, doc_ui=False, validation_error_status=400, validation_error_callback=validation_error
    )
    app.request_class = JsonBodyRequest
    # An id holding an encoded slash (/tasks/%2F0) is an unknown id, a 404: not a 308 to another route.
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    api_keys = ApiKeys(runtime.engine)
    attach(app, runtime, api_keys)
    auth.install(app, auth.Gate(api_keys, runtime.settings))
    for blueprint in BLUEPRINTS:
        app.register_api(blueprint)
    register_docs(app, auth.document_scopes(app, app.api_doc))
    app.register_blueprint(web.bp)  # the web page at /, outside the OpenAPI document
    app.wsgi_app = CookieKeys(app.wsgi_app)  # type: ignore[method-assign]
    register_error_handlers(app)

    @app.after_request
    def no_sniffing(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    return app
