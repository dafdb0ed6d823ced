"""Bookmark files: browsers' Netscape HTML (folders become tags), Pocket's CSV, URL lists, and our exports,
which import again as the same bookmarks."""

from __future__ import annotations

from datetime import datetime

import pytest

from infra.bookmarks import RENDERERS, Bookmark, UnreadableFile, parse
from tests.bookmark_files import POCKET_CSV, URL_LIST, netscape_file


def test_a_browser_export_of_2000_bookmarks_with_folders():
    data, expected = netscape_file(2000)
    bookmarks = parse(data)
    assert len(bookmarks) == 2000
    assert {b.url: set(b.tags) for b in bookmarks} == expected
    first = bookmarks[0]
    assert first.url == "https://bookmarks.example/page/0?ref=a&b=0"
    assert first.title == "Page 0 — café & co <0>"
    assert first.tags == ("Topic 0", "Sub 0.0", "firefox-tag")
    assert first.added_at == datetime(2023, 11, 14, 22, 13, 20)
    assert "Bookmarks bar" not in {tag for b in bookmarks for tag in b.tags}  # the browser's own folder


def test_pockets_csv_export():
    bookmarks = parse(POCKET_CSV)
    assert [(b.url, b.title, b.tags) for b in bookmarks] == [
        ("https://pocket.example/one", "A long read", ("reading", "longform")),
        ("https://pocket.example/two", 'Quotes, "and" commas', ()),
        ("https://pocket.example/three", "No title", ("tech",)),
    ]
    assert bookmarks[0].added_at == datetime(2023, 11, 14, 22, 13, 20)


def test_a_plain_list_of_urls_keeps_every_line_but_comments_and_blanks():
    assert [b.url for b in parse(URL_LIST)] == [
        "https://list.example/a",
        "https://list.example/b",
        "not a url",
        "https://list.example/a",
    ]


def test_pockets_older_html_export():
    data = (
        b"<!DOCTYPE html><html><body><h1>Unread</h1><ul>"
        b'<li><a href="https://pocket.example/x" time_added="1700000000" tags="a,b">X</a></li></ul></body></html>'
    )
    [bookmark] = parse(data)
    assert (bookmark.url, bookmark.title, bookmark.tags) == ("https://pocket.example/x", "X", ("a", "b"))


@pytest.mark.parametrize("format", RENDERERS)
def test_every_export_imports_as_the_same_bookmarks(format):
    bookmarks = [
        Bookmark(
            "https://a.example/?q=1&r=<2>",
            'Title "quoted", with, commas & <tags>',
            ("one", "two words"),
            datetime(2024, 5, 1, 12, 0, 0),
            datetime(2024, 6, 1, 8, 30, 0),
        ),
        Bookmark("https://b.example/", "", (), None, None),
        Bookmark("https://c.example/ünï", "Ünïcode ✓", ("ü",), datetime(2020, 1, 1), None),
    ]
    again = parse(RENDERERS[format](bookmarks).encode())
    assert [(b.url, b.title or b.url, b.tags, b.added_at) for b in again] == [
        (b.url, b.title or b.url, b.tags, b.added_at) for b in bookmarks
    ]
    if format != "html":  # the browsers' format has no place for a capture time
        assert [b.captured_at for b in again] == [b.captured_at for b in bookmarks]


def test_files_that_are_not_bookmarks():
    with pytest.raises(UnreadableFile):
        parse(b"\xff\xfe\x00garbage")
    with pytest.raises(UnreadableFile):
        parse(b'{"bookmarks": 3}')
    assert parse(b"") == []
