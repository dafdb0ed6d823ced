"""Bookmark files as browsers and Pocket write them, made up for the import tests."""

from __future__ import annotations

import html


def netscape_file(count: int = 2000, host: str = "https://bookmarks.example") -> tuple[bytes, dict[str, set[str]]]:
    """A browser's bookmark export of ``count`` bookmarks in nested folders, as Chrome and Firefox
    write it (the toolbar folder flagged, some Firefox TAGS, entities in titles); and what each URL's
    tags must be after an import."""
    expected: dict[str, set[str]] = {}
    lines = [
        "<!DOCTYPE NETSCAPE-Bookmark-file-1>",
        "<!-- This is an automatically generated file.",
        "     It will be read and overwritten.",
        "     DO NOT EDIT! -->",
        '<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=UTF-8">',
        "<TITLE>Bookmarks</TITLE>",
        "<H1>Bookmarks</H1>",
        "<DL><p>",
        '    <DT><H3 ADD_DATE="1700000000" PERSONAL_TOOLBAR_FOLDER="true">Bookmarks bar</H3>',
        "    <DL><p>",
    ]
    n = 0

    def bookmark(indent: str, folders: list[str]) -> None:
        nonlocal n
        url = f"{host}/page/{n}?ref=a&amp;b={n}"
        tags = ["firefox-tag"] if n % 10 == 0 else []
        listed = f' TAGS="{",".join(tags)}"' if tags else ""
        title = html.escape(f"Page {n} — café & co <{n}>")
        lines.append(f'{indent}<DT><A HREF="{url}" ADD_DATE="{1700000000 + n}"{listed}>{title}</A>')
        expected[html.unescape(url)] = {*folders, *tags}
        n += 1

    for top in range(10):
        folder = f"Topic {top}"
        lines += [f'        <DT><H3 ADD_DATE="1700000000">{folder}</H3>', "        <DL><p>"]
        for sub in range(4):
            inner = f"Sub {top}.{sub}"
            lines += [f"            <DT><H3>{inner}</H3>", "            <DL><p>"]
            for _ in range(40):
                bookmark("                ", [folder, inner])
            lines.append("            </DL><p>")
        for _ in range(30):
            bookmark("            ", [folder])
        lines.append("        </DL><p>")
    while n < count:  # loose on the toolbar: no tags but their own
        bookmark("        ", [])
    lines += ["    </DL><p>", "</DL><p>"]
    return "\n".join(lines).encode(), expected


POCKET_CSV = (
    b"title,url,time_added,tags,status\n"
    b"A long read,https://pocket.example/one,1700000000,reading|longform,unread\n"
    b'"Quotes, ""and"" commas",https://pocket.example/two,1700000100,,archive\n'
    b"No title,https://pocket.example/three,1700000200,tech,unread\n"
)

URL_LIST = b"# my links\nhttps://list.example/a\n\n  https://list.example/b  \nnot a url\nhttps://list.example/a\n"
