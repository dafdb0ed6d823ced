"""Bookmark files in and out: the formats people move between tools with.

In: the Netscape bookmark HTML every browser exports (each folder on the way
to a bookmark becomes one of its tags, as does a ``TAGS`` attribute), Pocket's
CSV export (``title,url,time_added,tags,status``, tags split by ``|``), this
module's own JSON export, and a plain list of URLs (one a line, ``#`` starts a
comment). Out: the same HTML, JSON and CSV, so an export imports again as the
same bookmarks with the same tags. Pure functions: no database, no network;
URLs are checked by whoever imports them.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

FORMATS = ("html", "json", "csv")
# Folders browsers make themselves: where a bookmark sits, not what it is about.
BROWSER_FOLDER_FLAGS = ("personal_toolbar_folder", "unfiled_bookmarks_folder")


class UnreadableFile(ValueError):
    pass


@dataclass(frozen=True)
class Bookmark:
    url: str
    title: str = ""
    tags: tuple[str, ...] = ()
    added_at: datetime | None = None  # when it was bookmarked (naive UTC)
    captured_at: datetime | None = None  # exports only: its newest capture


def parse(data: bytes) -> list[Bookmark]:
    """The bookmarks in a file of any of the formats, told apart by their content."""
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableFile("the file is not UTF-8 text") from None
    head = content.lstrip()[:1024].lower()
    if head.startswith(("{", "[")):
        return parse_json(content)
    if head.startswith("<") or "<a " in head or "<dl" in head:
        return parse_netscape(content)
    first_line = head.splitlines()[0] if head else ""
    if "url" in [cell.strip().strip('"') for cell in first_line.split(",")]:
        return parse_csv(content)
    return parse_url_list(content)


class _NetscapeParser(HTMLParser):
    """Folders are ``<DT><H3>name</H3><DL>…</DL>``; a bookmark is ``<DT><A HREF …>title</A>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.bookmarks: list[Bookmark] = []
        self.folders: list[str | None] = []  # one per open <DL>; None for a folder that is no tag
        self._heading: str | None = None
        self._heading_is_tag = True
        self._next_folder: str | None = None
        self._link: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name.lower(): value or "" for name, value in attrs}
        if tag == "h3":
            self._heading, self._heading_is_tag = "", not any(flag in attributes for flag in BROWSER_FOLDER_FLAGS)
        elif tag == "dl":
            self.folders.append(self._next_folder)
            self._next_folder = None
        elif tag == "a" and attributes.get("href"):
            self._link = {"attributes": attributes, "title": ""}

    def handle_endtag(self, tag: str) -> None:
        if tag == "h3" and self._heading is not None:
            name = " ".join(self._heading.split())
            self._next_folder = name if name and self._heading_is_tag else None
            self._heading = None
        elif tag == "dl" and self.folders:
            self.folders.pop()
        elif tag == "a" and self._link is not None:
            attributes = self._link["attributes"]
            listed = [t.strip() for t in attributes.get("tags", "").split(",") if t.strip()]
            tags = tuple(dict.fromkeys([*(f for f in self.folders if f), *listed]))
            self.bookmarks.append(
                Bookmark(
                    attributes["href"].strip(),
                    " ".join(self._link["title"].split()),
                    tags,
                    _from_timestamp(attributes.get("add_date") or attributes.get("time_added")),
                )
            )
            self._link = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading += data
        elif self._link is not None:
            self._link["title"] += data


def parse_netscape(content: str) -> list[Bookmark]:
    parser = _NetscapeParser()
    parser.feed(content)
    parser.close()
    return parser.bookmarks


def parse_csv(content: str) -> list[Bookmark]:
    """Pocket's export and this module's: a header row naming ``url`` (and maybe title, tags, times)."""
    rows = csv.DictReader(io.StringIO(content))
    bookmarks = []
    for row in rows:
        row = {(key or "").strip().lower(): (value or "").strip() for key, value in row.items()}
        if not row.get("url"):
            continue
        tags = tuple(t.strip() for t in row.get("tags", "").split("|") if t.strip())
        bookmarks.append(
            Bookmark(
                row["url"],
                row.get("title", ""),
                tags,
                _from_timestamp(row.get("time_added")) or _from_iso(row.get("added_at")),
                _from_iso(row.get("captured_at")),
            )
        )
    return bookmarks


def parse_json(content: str) -> list[Bookmark]:
    try:
        data = json.loads(content)
    except ValueError:
        raise UnreadableFile("the file is not valid JSON") from None
    entries = data.get("bookmarks") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise UnreadableFile("a JSON import is a list of bookmarks, or an object with 'bookmarks'")
    bookmarks = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            continue
        listed = entry.get("tags")
        tags = listed if isinstance(listed, list) else []
        bookmarks.append(
            Bookmark(
                entry["url"].strip(),
                str(entry.get("title") or ""),
                tuple(str(t) for t in tags if str(t).strip()),
                _from_iso(entry.get("added_at")),
                _from_iso(entry.get("captured_at")),
            )
        )
    return bookmarks


def parse_url_list(content: str) -> list[Bookmark]:
    lines = (line.strip() for line in content.splitlines())
    return [Bookmark(line) for line in lines if line and not line.startswith("#")]


def to_html(bookmarks: list[Bookmark]) -> str:
    """Netscape bookmark HTML, which every browser imports; tags go in ``TAGS`` (Firefox reads them)."""
    lines = [
        "<!DOCTYPE NETSCAPE-Bookmark-file-1>",
        '<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=UTF-8">',
        "<TITLE>Bookmarks</TITLE>",
        "<H1>Bookmarks</H1>",
        "<DL><p>",
    ]
    for b in bookmarks:
        added = f' ADD_DATE="{int(b.added_at.replace(tzinfo=UTC).timestamp())}"' if b.added_at else ""
        tags = f' TAGS="{html.escape(",".join(b.tags))}"' if b.tags else ""
        lines.append(f'    <DT><A HREF="{html.escape(b.url)}"{added}{tags}>{html.escape(b.title or b.url)}</A>')
    lines.append("</DL><p>")
    return "\n".join(lines) + "\n"


def to_json(bookmarks: list[Bookmark]) -> str:
    return (
        json.dumps(
            {
                "bookmarks": [
                    {
                        "url": b.url,
                        "title": b.title,
                        "tags": list(b.tags),
                        "added_at": _iso(b.added_at),
                        "captured_at": _iso(b.captured_at),
                    }
                    for b in bookmarks
                ]
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n"
    )


def to_csv(bookmarks: list[Bookmark]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["url", "title", "tags", "added_at", "captured_at"])
    for b in bookmarks:
        writer.writerow([b.url, b.title, "|".join(b.tags), _iso(b.added_at) or "", _iso(b.captured_at) or ""])
    return out.getvalue()


RENDERERS = {"html": to_html, "json": to_json, "csv": to_csv}
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "json": "application/json", "csv": "text/csv; charset=utf-8"}


def _from_timestamp(value: str | None) -> datetime | None:
    try:
        seconds = int(value or "")
    except ValueError:
        return None
    if seconds > 10**11:  # some exporters write microseconds (Chrome's JSON) or milliseconds
        seconds //= 1_000_000 if seconds > 10**14 else 1000
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None


def _from_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"
