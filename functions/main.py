"""functions-framework targets: one Cloud Run service per archiver, the summarizer, the dead-letter handler.

    functions-framework --source functions/main.py --target archive_pdf

Every archiver service deploys the same handler; ``ARCHIVERS`` (e.g. ``pdf``)
says which archiver that service runs, and the message names the archiver.
"""
from __future__ import annotations

from functools import lru_cache

from flask import Request, Response

from functions.push import handle_archive, handle_dead_letter, handle_summarize
from htbase.config import Settings
from htbase.logs import setup_logging
from htbase.runtime import Runtime, make_publisher


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = Settings.from_env()
    setup_logging(settings)
    return Runtime(settings, make_publisher(settings))


def archive(request: Request) -> Response:
    return handle_archive(runtime(), request)


archive_singlefile = archive_monolith = archive_readability = archive_pdf = archive_screenshot = archive


def summarize(request: Request) -> Response:
    return handle_summarize(runtime(), request)


def dead_letter(request: Request) -> Response:
    return handle_dead_letter(runtime(), request)
