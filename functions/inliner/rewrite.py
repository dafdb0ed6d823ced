"""HTML and CSS rewriting for the inliner: decode, drop everything active,
and hand every reference to a resolver that may replace it.

``walk`` visits every reference in a document and asks the resolver for a
replacement (None keeps the reference as it is); ``rewrite_css`` does the same
for a stylesheet. Nothing here fetches.
"""

from __future__ import annotations

import base64
import codecs
import re
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urljoin

import lxml.html
from lxml import etree

HTML_TYPES = ("", "text/html", "application/xhtml+xml")  # "": undeclared, parse it as HTML
# Nothing in the archive may load anything: data: URIs and inline styles only.
ISOLATION_CSP = "default-src 'unsafe-inline' data:; script-src 'none'; object-src 'none'"

_META_CHARSET = re.compile(r"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.I)
_CSS_CHARSET = re.compile(r"""^@charset\s+["']([\w.:-]+)["']""", re.I)
_CSS_CHARSET_RULE = re.compile(r"""^\s*@charset\s+["'][^"']*["']\s*;""", re.I)
# HTML treats these labels as windows-1252, a superset.
_ENCODING_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
}

_CSS_TOKEN = re.compile(
    r"""
    (?P<comment>/\*.*?(?:\*/|\Z))
  | @import\s*(?:url\(\s*(?P<q1>["']?)(?P<import1>.*?)(?P=q1)\s*\)|(?P<q2>["'])(?P<import2>.*?)(?P=q2))
  | (?<![\w-])url\(\s*(?P<q3>["']?)(?P<url>.*?)(?P=q3)\s*\)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
""",
    re.I | re.S | re.X,
)

# Elements and attributes holding one URL to embed.
_ASSET_ATTRS = {
    "img": ("src",),
    "input": ("src",),
    "video": ("poster", "src"),
    "audio": ("src",),
    "source": ("src",),
    "track": ("src",),
    "image": ("href", "xlink:href"),
    "body": ("background",),
    "table": ("background",),
    "td": ("background",),
    "th": ("background",),
}
_URL_ATTRS = {
    "href",
    "src",
    "action",
    "formaction",
    "xlink:href",
    "data",
    "poster",
    "background",
    "cite",
    "srcset",
    "lowsrc",
    "ping",
    "longdesc",
}
_DROPPED_RELS = {"preload", "prefetch", "modulepreload", "preconnect", "dns-prefetch", "prerender", "manifest"}
_DROPPED_META = {"refresh", "content-security-policy", "content-type", "set-cookie"}


class Resolver(Protocol):
    """What ``walk`` asks about each reference; None keeps it, "" empties it."""

    def asset(self, url: str) -> str | None: ...
    def stylesheet(self, url: str) -> str | None: ...
    def frame(self, url: str, depth: int) -> str | None: ...
    def srcdoc(self, html: str, base: str, depth: int) -> str | None: ...
    def css(self, text: str, base: str) -> str | None: ...


def _decode(data: bytes, declared: str | None, sniff: re.Pattern) -> str:
    """Bytes to text: BOM, then the HTTP charset, then the document's own
    declaration, then utf-8, then windows-1252."""
    if data.startswith(codecs.BOM_UTF8):
        return data.decode("utf-8-sig", "replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    found = sniff.search(data[:4096].decode("ascii", "replace"))
    for label in (declared, found.group(1) if found else None):
        if label:
            label = _ENCODING_ALIASES.get(label.lower(), label)
            try:
                return data.decode(codecs.lookup(label).name, "replace")
            except LookupError:
                continue
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def css_text(data: bytes, charset: str | None) -> str:
    text = _decode(data, charset, _CSS_CHARSET)
    return _CSS_CHARSET_RULE.sub("", text, count=1)  # it is utf-8 from here on


def parse_html(data: bytes, charset: str | None):
    """The document, decoded as a browser would."""
    text = _decode(data, charset, _META_CHARSET)
    try:
        # A parser per document: lxml parsers must not be shared between threads.
        return lxml.html.document_fromstring(text.encode("utf-8"), parser=lxml.html.HTMLParser(encoding="utf-8"))
    except (etree.ParserError, ValueError):  # empty document
        return lxml.html.document_fromstring("<html><head></head><body></body></html>")


def seal(doc) -> str:
    """The document as utf-8 HTML that may load nothing."""
    head = doc.find("head")
    if head is None:
        head = lxml.html.Element("head")
        doc.insert(0, head)
    head.insert(0, lxml.html.Element("meta", charset="utf-8"))
    head.insert(1, lxml.html.Element("meta", {"http-equiv": "Content-Security-Policy", "content": ISOLATION_CSP}))
    doctype = doc.getroottree().docinfo.doctype or "<!DOCTYPE html>"
    return lxml.html.tostring(doc, encoding="unicode", method="html", doctype=doctype)


def data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def title(doc) -> str:
    return (doc.findtext(".//title") or "").strip()


def rewrite_css(text: str, base: str, asset: Callable, css_import: Callable) -> str:
    """Replace every ``url()`` and ``@import`` in ``text`` (resolved against
    ``base``) with what the callbacks answer; None keeps the original.
    Comments go; strings stay as they are."""

    def replace(m: re.Match) -> str:
        if m["comment"] is not None:
            return ""
        if m["string"] is not None:
            return m[0]
        if m[0].startswith("@"):
            target = m["import1"] if m["import1"] is not None else m["import2"]
            value = css_import(urljoin(base, target.strip())) if target.strip() else None
            return m[0] if value is None else f'@import url("{value}")'
        target = m["url"].strip()
        if not target or target.startswith(("data:", "#")):
            return m[0]
        value = asset(urljoin(base, target))
        return m[0] if value is None else f'url("{value}")'

    return _CSS_TOKEN.sub(replace, text)


def _is_script_url(value: str) -> bool:
    return re.sub(r"[\x00-\x20]", "", value).lower().startswith(("javascript:", "vbscript:"))


def prepare(doc, url: str) -> str:
    """Drop everything active or self-updating, make links absolute; return
    the base URL relative references resolve against."""
    hrefs = [el.get("href") for el in doc.iter("base") if el.get("href")]
    base = urljoin(url, hrefs[0].strip()) if hrefs else url  # the first <base href> counts
    for el in list(doc.iter("base")):
        el.drop_tree()
    for el in list(doc.iter("script", "embed", "applet")):
        el.drop_tree()
    for el in list(doc.iter("noscript", "object")):  # no scripts: show their fallback content
        el.drop_tag()
    for el in list(doc.iter("meta")):
        if el.get("charset") is not None or (el.get("http-equiv") or "").lower() in _DROPPED_META:
            el.drop_tree()
    for el in list(doc.iter("link")):
        if set((el.get("rel") or "").lower().split()) & _DROPPED_RELS:
            el.drop_tree()
    for el in doc.iter(etree.Element):
        for name, value in list(el.attrib.items()):
            low = name.lower()
            if low.startswith("on") or (low in _URL_ATTRS and _is_script_url(value)):
                del el.attrib[name]
        link_attr = {"a": "href", "area": "href", "link": "href", "form": "action"}.get(el.tag)
        if link_attr and el.get(link_attr) and not el.get(link_attr).startswith("#"):
            el.set(link_attr, urljoin(base, el.get(link_attr).strip()))
    return base


_SRCSET_URL = re.compile(r"[\s,]*(\S+)")


def _srcset_candidates(value: str) -> list[tuple[str, str]]:
    """(url, descriptor) pairs, parsed as HTML does: a URL is a run of
    non-space (data: URLs contain commas); trailing commas end a candidate."""
    pairs, pos = [], 0
    while m := _SRCSET_URL.match(value, pos):
        url, pos = m[1], m.end()
        if url.endswith(","):
            pairs.append((url.rstrip(","), ""))
            continue
        end = value.find(",", pos)
        end = len(value) if end < 0 else end
        pairs.append((url, value[pos:end].strip()))
        pos = end + 1
    return pairs


def _srcset(value: str, base: str, asset: Callable) -> str | None:
    """Each candidate URL of a srcset through ``asset``; failed ones go."""
    candidates, changed = [], False
    for url, descriptor in _srcset_candidates(value):
        new = asset(urljoin(base, url)) if not url.startswith("data:") else None
        changed = changed or new is not None
        if new != "":
            candidates.append(f"{url if new is None else new} {descriptor}".strip())
    return ", ".join(candidates) if changed else None


def walk(doc, base: str, depth: int, r: Resolver) -> None:
    """Every reference in ``doc`` through resolver ``r``."""

    def absolute(value: str) -> str:
        return urljoin(base, value.strip())

    for el in list(doc.iter(etree.Element)):
        tag = el.tag
        for attr in _ASSET_ATTRS.get(tag, ()):
            if el.get(attr) and not el.get(attr).startswith("data:"):
                value = r.asset(absolute(el.get(attr)))
                if value is not None:
                    el.set(attr, value)
        if el.get("srcset") and tag in ("img", "source"):
            value = _srcset(el.get("srcset"), base, r.asset)
            if value is not None:
                el.set("srcset", value)
        if el.get("style"):
            value = r.css(el.get("style"), base)
            if value is not None:
                el.set("style", value)
        if tag == "style" and el.text:
            value = r.css(el.text, base)
            if value is not None:
                el.text = value
        elif tag == "link" and el.get("href"):
            rel = set((el.get("rel") or "").lower().split())
            url = absolute(el.get("href"))
            if "stylesheet" in rel:
                css = r.stylesheet(url)
                if css is None:
                    continue
                if "alternate" in rel:  # stays a link, so it stays switched off
                    el.set("href", data_uri("text/css;charset=utf-8", css.encode("utf-8")) if css else "")
                    continue
                style = lxml.html.Element("style")
                style.text = css
                if el.get("media"):
                    style.set("media", el.get("media"))
                style.tail = el.tail
                el.getparent().replace(el, style)
            elif any(token.endswith("icon") for token in rel):
                value = r.asset(url)
                if value is not None:
                    el.set("href", value)
        elif tag in ("iframe", "frame"):
            if el.get("srcdoc"):
                value = r.srcdoc(el.get("srcdoc"), base, depth)
                if value is not None:
                    el.set("srcdoc", value)
            elif el.get("src") and not el.get("src").startswith(("data:", "about:")):
                value = r.frame(absolute(el.get("src")), depth)
                if value is not None:
                    el.set("src", value)
