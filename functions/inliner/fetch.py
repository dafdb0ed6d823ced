"""The inliner's fetcher: every request through the egress proxy, all of them
within one deadline, each answer size-capped, every failure a capture error."""

from __future__ import annotations

import mimetypes
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from functions.archivers.base import CaptureTimeout, PermanentCaptureError, TransientCaptureError, http_failure
from infra.egress.proxy import REFUSED_HEADER

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 htbase/2"
)
CONNECT_TIMEOUT_S = 10.0


@dataclass
class Resource:
    url: str  # after redirects
    content_type: str  # media type only, lowercase
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
        node = (
            getattr(node, "original_error", None)
            or getattr(node, "reason", None)
            or (nested[0] if nested else None)
            or node.__cause__
        )
        node = node if isinstance(node, BaseException) else None
        seen += 1
    return None


def _check_status(resp: requests.Response) -> None:
    if resp.status_code < 400:
        return
    refused = resp.headers.get(REFUSED_HEADER)
    if refused:
        raise PermanentCaptureError(refused)
    raise http_failure(resp.status_code, f"HTTP {resp.status_code} {resp.reason} for {resp.url}")


def _media_type(resp: requests.Response) -> tuple[str, str | None]:
    header = resp.headers.get("Content-Type", "")
    media, _, params = header.partition(";")
    charset = re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", params, re.I)
    media = media.strip().lower()
    if not re.fullmatch(r"[\w.+-]+/[\w.+-]+", media):  # also keeps data: URIs well-formed
        media = mimetypes.guess_type(urlsplit(resp.url).path)[0] or ""
    return media, charset.group(1) if charset else None


class Fetcher:
    """A requests session through the proxy, with ``connections`` pooled
    connections and one deadline, ``timeout`` seconds from now."""

    def __init__(self, proxy_url: str, timeout: float, connections: int):
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.session = requests.Session()
        self.session.trust_env = False  # the proxy below, not whatever the environment says
        self.session.proxies = {"http": proxy_url, "https": proxy_url}
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = requests.adapters.HTTPAdapter(pool_connections=connections, pool_maxsize=connections)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def fetch(self, url: str, limit: int, timeout: float, accept: str = "*/*", what: str = "page") -> Resource:
        """GET ``url`` (redirects followed, each hop through the proxy), reading
        at most ``limit`` bytes within ``timeout``; raises CaptureError."""
        deadline = min(self.deadline, time.monotonic() + timeout)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out(url)
        try:
            with self.session.get(
                url, stream=True, headers={"Accept": accept}, timeout=(min(CONNECT_TIMEOUT_S, remaining), remaining)
            ) as resp:
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
                return Resource(resp.url, media, charset, b"".join(chunks))
        except requests.exceptions.ProxyError as exc:
            refusal = _proxy_refusal(exc)
            if refusal:
                raise PermanentCaptureError(refusal) from None
            raise TransientCaptureError(f"proxy error fetching {url}: {exc}") from None
        except (requests.exceptions.Timeout, ReadTimeoutError, TimeoutError):  # body reads raise urllib3's
            raise self._timed_out(url) from None
        except (
            requests.exceptions.TooManyRedirects,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise PermanentCaptureError(f"cannot fetch {url}: {exc}") from None
        except (requests.RequestException, Urllib3Error, OSError) as exc:
            raise TransientCaptureError(f"cannot fetch {url}: {exc}") from None

    def _timed_out(self, url: str) -> CaptureTimeout:
        return CaptureTimeout(f"timed out after {self.timeout:g}s fetching {url}")
