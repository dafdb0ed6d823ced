"""The monolith archiver: the page as one self-contained HTML file, no JavaScript run.

Where the ``monolith`` binary is installed (container images) it does the work.
Elsewhere a built-in inliner produces the same kind of file: it fetches the
page, embeds stylesheets, images, fonts and frames as ``data:`` URIs and drops
every script. Every fetch of either goes through the egress proxy, so
redirects and sub-resources obey the egress policy too.
"""
from __future__ import annotations

import base64
import codecs
import mimetypes
import re
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import lxml.html
import requests
from lxml import etree
from urllib3.exceptions import HTTPError as Urllib3Error, ReadTimeoutError

from functions.archivers.base import (
    Capture, CaptureError, PermanentCaptureError, TransientCaptureError, capture_timeout, check_url,
)
from htbase.config import Settings
from infra.egress import REFUSED_HEADER, EgressPolicy, EgressProxy

HTML_TYPE = "text/html; charset=utf-8"
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0 Safari/537.36 htbase/2")
FETCH_WORKERS = 6
RESOURCE_TIMEOUT_S = 20.0   # one slow image must not hold the whole capture
CONNECT_TIMEOUT_S = 10.0
MAX_FRAME_DEPTH = 3
MAX_FAILURES_LISTED = 20
# Nothing in the archive may load anything: data: URIs and inline styles only.
ISOLATION_CSP = "default-src 'unsafe-inline' data:; script-src 'none'; object-src 'none'"


class MonolithArchiver:
    name = "monolith"

    def __init__(self, settings: Settings, proxy_url: str | None = None):
        self.settings = settings
        self._proxy_url = proxy_url
        self._own_proxy: EgressProxy | None = None
        self._lock = threading.Lock()

    def proxy_url(self) -> str:
        """The egress proxy every fetch goes through; without one handed in,
        the archiver runs its own so the guard can never be skipped."""
        with self._lock:
            if self._proxy_url is None:
                self._own_proxy = EgressProxy(EgressPolicy.from_settings(self.settings)).start()
                self._proxy_url = self._own_proxy.url
            return self._proxy_url

    def close(self) -> None:
        with self._lock:
            if self._own_proxy is not None:
                self._own_proxy.stop()
                self._own_proxy = self._proxy_url = None

    def capture(self, url: str, options: dict[str, Any]) -> Capture:
        url = check_url(url)
        timeout = capture_timeout(self.settings, options)
        if self.settings.monolith_path:
            return self._run_binary(url, timeout)
        with _Inliner(self.proxy_url(), timeout, self.settings.max_capture_bytes) as inliner:
            return inliner.capture(url)

    def _run_binary(self, url: str, timeout: float) -> Capture:
        proxy = self.proxy_url()
        # Only the proxy settings: the tool needs nothing else from our environment.
        env = {"http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy}
        with tempfile.TemporaryDirectory(prefix="htbase-monolith-") as tmp:
            out = Path(tmp) / "page.html"
            cmd = [self.settings.monolith_path, url, "-j", "-I",
                   "-t", str(max(1, int(timeout))), "-o", str(out)]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout + 10)
            except subprocess.TimeoutExpired:
                raise TransientCaptureError(f"monolith timed out after {timeout:g} s") from None
            if proc.returncode != 0 or not out.is_file():
                tail = proc.stderr.decode("utf-8", "replace").strip()[-500:]
                raise TransientCaptureError(f"monolith exited with {proc.returncode}: {tail}")
            data = out.read_bytes()
        if len(data) > self.settings.max_capture_bytes:
            raise PermanentCaptureError(f"page is over the limit of {self.settings.max_capture_bytes} bytes")
        doc = lxml.html.document_fromstring(data)
        return Capture(data, HTML_TYPE, "html",
                       {"title": _title(doc), "final_url": url, "engine": "monolith"})


# ----------------------------------------------------------------- fetching

@dataclass
class _Resource:
    url: str                 # after redirects
    content_type: str        # media type only, lowercase
    charset: str | None
    data: bytes
    text: str = field(default="", repr=False)  # decoded, for stylesheets


def _proxy_refusal(exc: BaseException) -> str | None:
    """The guard's reason from a refused CONNECT, which requests only reports
    as "Tunnel connection failed: 403 <reason phrase>" deep in its chain."""
    seen = 0
    node: BaseException | None = exc
    while node is not None and seen < 8:
        text = str(node)
        if text.startswith("Tunnel connection failed: 403 "):
            return text.removeprefix("Tunnel connection failed: 403 ")
        nested = [a for a in node.args if isinstance(a, BaseException)]
        node = (getattr(node, "original_error", None) or getattr(node, "reason", None)
                or (nested[0] if nested else None) or node.__cause__)
        node = node if isinstance(node, BaseException) else None
        seen += 1
    return None


def _check_status(resp: requests.Response) -> None:
    if resp.status_code < 400:
        return
    refused = resp.headers.get(REFUSED_HEADER)
    if refused:
        raise PermanentCaptureError(refused)
    message = f"HTTP {resp.status_code} {resp.reason} for {resp.url}"
    if resp.status_code >= 500 or resp.status_code in (408, 425, 429):
        raise TransientCaptureError(message)
    raise PermanentCaptureError(message)


def _media_type(resp: requests.Response) -> tuple[str, str | None]:
    header = resp.headers.get("Content-Type", "")
    media, _, params = header.partition(";")
    charset = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", params, re.I)
    media = media.strip().lower()
    if not re.fullmatch(r"[\w.+-]+/[\w.+-]+", media):  # also keeps data: URIs well-formed
        media = mimetypes.guess_type(urlsplit(resp.url).path)[0] or ""
    return media, charset.group(1) if charset else None


class _Inliner:
    """One built-in capture: a requests session through the proxy, a small
    pool for sub-resources, one deadline and one byte budget."""

    def __init__(self, proxy_url: str, timeout: float, max_bytes: int):
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.max_bytes = max_bytes
        self.budget = max_bytes
        self.session = requests.Session()
        self.session.trust_env = False  # the proxy below, not whatever the environment says
        self.session.proxies = {"http": proxy_url, "https": proxy_url}
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = requests.adapters.HTTPAdapter(pool_connections=FETCH_WORKERS, pool_maxsize=FETCH_WORKERS)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="monolith-fetch")
        self.futures: dict[str, Future] = {}
        self.futures_lock = threading.Lock()
        self.embedded: set[str] = set()
        self.failed: dict[str, str] = {}
        self.prefetch = _Prefetch(self)
        self.embed = _Embed(self)

    def __enter__(self) -> "_Inliner":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()

    def fetch(self, url: str, limit: int, timeout: float, accept: str = "*/*", what: str = "page") -> _Resource:
        """GET ``url`` (redirects followed, each hop through the proxy), reading
        at most ``limit`` bytes within ``timeout``; raises CaptureError."""
        deadline = min(self.deadline, time.monotonic() + timeout)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out(url)
        try:
            with self.session.get(url, stream=True, headers={"Accept": accept},
                                  timeout=(min(CONNECT_TIMEOUT_S, remaining), remaining)) as resp:
                _check_status(resp)
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit and "Content-Encoding" not in resp.headers:
                    raise PermanentCaptureError(f"{what} is over the limit of {limit} bytes")
                chunks, size = [], 0
                # read1 returns as soon as any data arrives, so a trickling
                # server cannot stretch the deadline.
                while chunk := resp.raw.read1(64 * 1024, decode_content=True):
                    size += len(chunk)
                    if size > limit:
                        raise PermanentCaptureError(f"{what} is over the limit of {limit} bytes")
                    if time.monotonic() > deadline:
                        raise self._timed_out(url)
                    chunks.append(chunk)
                media, charset = _media_type(resp)
                return _Resource(resp.url, media, charset, b"".join(chunks))
        except requests.exceptions.ProxyError as exc:
            refusal = _proxy_refusal(exc)
            if refusal:
                raise PermanentCaptureError(refusal) from None
            raise TransientCaptureError(f"proxy error fetching {url}: {exc}") from None
        except (requests.exceptions.Timeout, ReadTimeoutError, TimeoutError):  # body reads raise urllib3's
            raise self._timed_out(url) from None
        except (requests.exceptions.TooManyRedirects, requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise PermanentCaptureError(f"cannot fetch {url}: {exc}") from None
        except (requests.RequestException, Urllib3Error, OSError) as exc:
            raise TransientCaptureError(f"cannot fetch {url}: {exc}") from None

    def _timed_out(self, url: str) -> TransientCaptureError:
        return TransientCaptureError(f"timed out after {self.timeout:g}s fetching {url}")

    # ---- sub-resources: fetched concurrently, each once

    def submit(self, url: str, kind: str) -> None:
        with self.futures_lock:
            if url not in self.futures:
                self.futures[url] = self.pool.submit(self._load, url, kind)

    def _load(self, url: str, kind: str) -> _Resource:
        res = self.fetch(url, self.budget, RESOURCE_TIMEOUT_S, what="resource")
        if kind == "css":
            res.text = _css_text(res)
            self.prefetch.css(res.text, res.url)  # start on fonts and images right away
        return res

    def result(self, url: str, kind: str) -> _Resource | None:
        self.submit(url, kind)
        try:
            return self.futures[url].result()
        except CaptureError as exc:
            self.failed[url] = str(exc)
            return None

    def charge(self, url: str, size: int) -> bool:
        """Take ``size`` bytes of output from the budget, or count ``url`` failed."""
        if size > self.budget:
            self.failed[url] = f"over the capture limit of {self.max_bytes} bytes"
            return False
        self.budget -= size
        self.embedded.add(url)
        return True

    # ---- documents

    def capture(self, url: str) -> Capture:
        page = self.fetch(url, self.max_bytes, self.timeout, accept="text/html,application/xhtml+xml,*/*;q=0.8")
        if page.content_type not in _HTML_TYPES:
            raise PermanentCaptureError(f"not an HTML page ({page.content_type}); monolith archives HTML")
        self.budget -= len(page.data)
        html, title = self.inline_document(page, depth=0)
        return Capture(html.encode("utf-8"), HTML_TYPE, "html", {
            "title": title,
            "final_url": page.url,
            "engine": "builtin",
            "resources_embedded": len(self.embedded),
            "resources_failed": len(self.failed),
            "failed_resources": [{"url": u, "error": e} for u, e in list(self.failed.items())[:MAX_FAILURES_LISTED]],
        })

    def inline_document(self, page: _Resource, depth: int) -> tuple[str, str]:
        """The page as self-contained HTML (and its title)."""
        text = _decode(page.data, page.charset, _META_CHARSET)
        try:
            # A parser per document: lxml parsers must not be shared between threads.
            doc = lxml.html.document_fromstring(text.encode("utf-8"), parser=lxml.html.HTMLParser(encoding="utf-8"))
        except (etree.ParserError, ValueError):  # empty document
            doc = lxml.html.document_fromstring("<html><head></head><body></body></html>")
        base = _prepare(doc, page.url)
        _walk(doc, base, depth, self.prefetch)  # start every fetch...
        _walk(doc, base, depth, self.embed)     # ...then embed them in order
        head = doc.find("head")
        if head is None:
            head = lxml.html.Element("head")
            doc.insert(0, head)
        head.insert(0, lxml.html.Element("meta", charset="utf-8"))
        head.insert(1, lxml.html.Element("meta", {"http-equiv": "Content-Security-Policy", "content": ISOLATION_CSP}))
        doctype = doc.getroottree().docinfo.doctype or "<!DOCTYPE html>"
        return lxml.html.tostring(doc, encoding="unicode", method="html", doctype=doctype), _title(doc)


# ---------------------------------------------------------------- resolvers
# ``_walk`` visits every reference in a document and asks a resolver for a
# replacement. ``_Prefetch`` only starts fetches and answers None (nothing
# changes); ``_Embed`` waits for them and answers data: URIs ("" on failure).

class _Prefetch:
    def __init__(self, inliner: _Inliner):
        self.inliner = inliner

    def asset(self, url: str) -> None:
        self.inliner.submit(url, "asset")

    def stylesheet(self, url: str) -> None:
        self.inliner.submit(url, "css")

    def frame(self, url: str, depth: int) -> None:
        if depth < MAX_FRAME_DEPTH:
            self.inliner.submit(url, "html")

    def srcdoc(self, html: str, base: str, depth: int) -> None:
        return None

    def css(self, text: str, base: str) -> None:
        _rewrite_css(text, base, self.asset, self.stylesheet)


class _Embed:
    def __init__(self, inliner: _Inliner):
        self.inliner = inliner
        self.imports: list[str] = []  # the @import chain, to break cycles

    def asset(self, url: str) -> str:
        res = self.inliner.result(url, "asset")
        if res is None:
            return ""
        uri = _data_uri(res.content_type or "application/octet-stream", res.data)
        return uri if self.inliner.charge(url, len(uri)) else ""

    def _stylesheet_text(self, url: str) -> str:
        """The stylesheet's text with everything it references embedded."""
        res = self.inliner.result(url, "css")
        if res is None or url in self.imports:
            return ""
        self.imports.append(url)
        try:
            return self.css(res.text or _css_text(res), res.url)
        finally:
            self.imports.pop()

    def stylesheet(self, url: str) -> str:
        css = self._stylesheet_text(url)
        return css if css and self.inliner.charge(url, len(css)) else ""

    def css_import(self, url: str) -> str:
        css = self._stylesheet_text(url)
        uri = _data_uri("text/css;charset=utf-8", css.encode("utf-8")) if css else ""
        return uri if uri and self.inliner.charge(url, len(uri)) else ""

    def frame(self, url: str, depth: int) -> str:
        if depth >= MAX_FRAME_DEPTH:
            return ""
        res = self.inliner.result(url, "html")
        if res is None:
            return ""
        if res.content_type in _HTML_TYPES:
            html, _ = self.inliner.inline_document(res, depth + 1)
            uri = _data_uri("text/html;charset=utf-8", html.encode("utf-8"))
        else:  # a framed image or the like is shown as it is
            uri = _data_uri(res.content_type, res.data)
        return uri if self.inliner.charge(url, len(uri)) else ""

    def srcdoc(self, html: str, base: str, depth: int) -> str:
        if depth >= MAX_FRAME_DEPTH:
            return ""
        return self.inliner.inline_document(_Resource(base, "text/html", "utf-8", html.encode("utf-8")), depth + 1)[0]

    def css(self, text: str, base: str) -> str:
        # "</" would end a <style> element early: escape it (same meaning in CSS).
        return _rewrite_css(text, base, self.asset, self.css_import).replace("</", "<\\/")


# ------------------------------------------------------------ HTML and CSS

_HTML_TYPES = ("", "text/html", "application/xhtml+xml")  # "": undeclared, parse it as HTML
_META_CHARSET = re.compile(r"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.I)
_CSS_CHARSET = re.compile(r"""^@charset\s+["']([\w.:-]+)["']""", re.I)
_CSS_CHARSET_RULE = re.compile(r"""^\s*@charset\s+["'][^"']*["']\s*;""", re.I)
# HTML treats these labels as windows-1252, a superset.
_ENCODING_ALIASES = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                     "us-ascii": "cp1252", "ascii": "cp1252"}

_CSS_TOKEN = re.compile(r"""
    (?P<comment>/\*.*?(?:\*/|\Z))
  | @import\s*(?:url\(\s*(?P<q1>["']?)(?P<import1>.*?)(?P=q1)\s*\)|(?P<q2>["'])(?P<import2>.*?)(?P=q2))
  | (?<![\w-])url\(\s*(?P<q3>["']?)(?P<url>.*?)(?P=q3)\s*\)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
""", re.I | re.S | re.X)

# Elements and attributes holding one URL to embed.
_ASSET_ATTRS = {
    "img": ("src",), "input": ("src",), "video": ("poster", "src"), "audio": ("src",),
    "source": ("src",), "track": ("src",), "image": ("href", "xlink:href"),
    "body": ("background",), "table": ("background",), "td": ("background",), "th": ("background",),
}
_URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "data", "poster", "background",
              "cite", "srcset", "lowsrc", "ping", "longdesc"}
_DROPPED_RELS = {"preload", "prefetch", "modulepreload", "preconnect", "dns-prefetch", "prerender", "manifest"}
_DROPPED_META = {"refresh", "content-security-policy", "content-type", "set-cookie"}


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


def _css_text(res: _Resource) -> str:
    text = _decode(res.data, res.charset, _CSS_CHARSET)
    return _CSS_CHARSET_RULE.sub("", text, count=1)  # it is utf-8 from here on


def _data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def _title(doc) -> str:
    return (doc.findtext(".//title") or "").strip()


def _rewrite_css(text: str, base: str, asset, css_import) -> str:
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


def _prepare(doc, url: str) -> str:
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


def _srcset(value: str, base: str, asset) -> str | None:
    """Each candidate URL of a srcset through ``asset``; failed ones go."""
    candidates, changed = [], False
    for url, descriptor in _srcset_candidates(value):
        new = asset(urljoin(base, url)) if not url.startswith("data:") else None
        changed = changed or new is not None
        if new != "":
            candidates.append(f"{url if new is None else new} {descriptor}".strip())
    return ", ".join(candidates) if changed else None


def _walk(doc, base: str, depth: int, r) -> None:
    """Every reference in ``doc`` through resolver ``r`` (see above)."""
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
                    el.set("href", _data_uri("text/css;charset=utf-8", css.encode("utf-8")) if css else "")
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
