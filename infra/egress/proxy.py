"""The egress proxy: an HTTP forward proxy every archiver fetch goes through.

It resolves and vets each host with the ``EgressPolicy`` and connects to the
vetted address itself, so redirects, sub-resources and DNS rebinding cannot
get past the policy. A refusal is marked with ``REFUSED_HEADER``.

It also bounds what one fetch can pour into a capture (``max_body_bytes``).
A plain-HTTP body is counted as it will be *decoded*: gzip and deflate are
inflated a bounded piece at a time as they stream through, so a few hundred KB
that inflate to gigabytes are cut at the limit; clients are only offered those
two codings, and a body in a coding the proxy cannot decode but browsers can
(br, zstd) is refused. The limit's crossing chunk is still passed on before the
cut, so a client that counts too sees the excess, not a clean short body. An
HTTPS tunnel is opaque: it carries at most the limit in bytes, either way.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from htbase.logs import log
from infra.egress.policy import EgressPolicy, EgressRefused, ResolutionError

logger = logging.getLogger("htbase.egress")

REFUSED_HEADER = "X-Htbase-Egress-Refused"

_MAX_HEAD = 64 * 1024
_CHUNK = 256 * 1024
# Content codings the proxy inflates to count a body's size (zlib's window bits
# for each), and those browsers decode but the proxy cannot.
_INFLATED = {"gzip": 31, "x-gzip": 31, "deflate": 15}
_UNDECODABLE = frozenset({"br", "zstd"})
# A compressed body goes on in slices this small: deflate inflates at most
# ~1000-fold, so the slice that crosses the limit overshoots it by ~2 MB
# (unless codings are nested: the browser's own count stops those).
_COMPRESSED_SLICE = 2048
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    }
)


class _BadRequest(Exception):
    pass


class _UpstreamFailed(Exception):
    pass


class _ClientGone(Exception):
    """The client hung up while we waited on the origin: drop the origin too."""


class _TooLarge(Exception):
    """A body or tunnel went past the size limit: cut it."""


class _Inflater:
    """One content coding undone incrementally, at most ``_CHUNK`` bytes of
    output at a time, so memory stays bounded whatever the ratio."""

    def __init__(self, coding: str):
        self.wbits = _INFLATED[coding]
        self.zlib = zlib.decompressobj(self.wbits)
        self.started = False
        self.broken = False

    def inflate(self, data: bytes) -> Iterator[bytes]:
        if self.broken:  # the client cannot decode it either; count it as it is
            yield data
            return
        while data and not self.zlib.eof:
            try:
                out = self.zlib.decompress(data, _CHUNK)
            except zlib.error:
                if self.wbits == 15 and not self.started:  # "deflate" sent raw, as some servers do
                    self.wbits, self.zlib = -15, zlib.decompressobj(-15)
                    continue
                self.broken = True
                yield data
                return
            self.started = True
            data = self.zlib.unconsumed_tail
            if out:
                yield out


class _SizeMeter:
    """Counts a body's decoded bytes as it streams through ``admit``."""

    def __init__(self, codings: list[str], limit: int):
        # The coding applied last is undone first; unknown ones browsers pass through as they are.
        self.inflaters = [_Inflater(c) for c in reversed(codings) if c in _INFLATED]
        self.limit = limit
        self.size = 0

    def admit(self, data: bytes) -> Iterator[bytes]:
        """``data`` in the pieces to pass on; raises ``_TooLarge`` once the
        piece that took the body past the limit has been passed on."""
        step = _COMPRESSED_SLICE if self.inflaters else max(1, len(data))
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            for decoded in self._decoded(piece, 0):
                self.size += len(decoded)
                if self.size > self.limit:
                    break  # no need to inflate the rest (codings nested in codings multiply)
            yield piece
            if self.size > self.limit:
                raise _TooLarge(f"body is over {self.limit} bytes decoded")

    def _decoded(self, data: bytes, depth: int) -> Iterator[bytes]:
        if depth == len(self.inflaters):
            yield data
            return
        for piece in self.inflaters[depth].inflate(data):
            yield from self._decoded(piece, depth + 1)


def _offered_codings(accept_encoding: str) -> str:
    """A request's Accept-Encoding cut down to the codings the proxy can measure."""
    kept = [
        part.strip()
        for part in accept_encoding.split(",")
        if part.split(";")[0].strip().lower() in (*_INFLATED, "identity")
    ]
    return ", ".join(kept) or "identity"


def _header_safe(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]", "?", text)


@dataclass
class _Message:
    start: list[str]  # request or status line, split in three
    headers: list[tuple[str, str]]

    @classmethod
    def parse(cls, head: bytes) -> _Message:
        lines = head.decode("latin-1").split("\r\n")
        start = lines[0].split(" ", 2)
        if len(start) < 2:
            raise _BadRequest(f"malformed start line {lines[0][:100]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(f"malformed header line {line[:100]!r}")
            headers.append((name, value.strip()))
        return cls(start + [""] * (3 - len(start)), headers)

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> set[str]:
        return set(self.token_list(name))

    def token_list(self, name: str) -> list[str]:
        return [t.strip().lower() for t in (self.get(name) or "").split(",") if t.strip()]

    def forwardable(self) -> list[tuple[str, str]]:
        """Headers without the hop-by-hop ones (and those Connection names)."""
        drop = _HOP_BY_HOP | self.tokens("connection")
        return [(k, v) for k, v in self.headers if k.lower() not in drop]

    def body_length(self) -> int | None:
        """Bytes of body that follow, -1 for chunked, None for "until close"."""
        te = self.tokens("transfer-encoding")
        if te:
            if self.get("content-length") is not None:
                raise _BadRequest("both Transfer-Encoding and Content-Length")
            return -1 if (self.get("transfer-encoding") or "").lower().rstrip().endswith("chunked") else None
        length = self.get("content-length")
        if length is None:
            return None
        values = {v.strip() for v in length.split(",")}
        value = values.pop()
        if values or not value.isdigit():
            raise _BadRequest(f"bad Content-Length {length!r}")
        return int(value)


def _send(dst: socket.socket, data: bytes, meter: _SizeMeter | None) -> None:
    for piece in meter.admit(data) if meter else (data,):
        dst.sendall(piece)


def _encode_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Stream:
    """A socket with a read buffer. While reading it can watch another socket
    (the client) and give up as soon as that one hangs up."""

    def __init__(self, sock: socket.socket, timeout: float, watch: socket.socket | None = None):
        self.sock, self.timeout, self.watch = sock, timeout, watch
        self.buf = bytearray()
        if watch is not None:
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
            self._poll.register(watch, select.POLLIN)

    def _recv(self, size: int = _CHUNK) -> bytes:
        while self.watch is not None:
            ready = dict(self._poll.poll(self.timeout * 1000))
            if not ready:
                raise TimeoutError("idle timeout")
            if self.sock.fileno() in ready:
                break
            try:
                if not self.watch.recv(1, socket.MSG_PEEK):
                    raise _ClientGone()
            except OSError:
                raise _ClientGone() from None
            # The client sent more (a pipelined request): it is alive; stop watching.
            self._poll.unregister(self.watch)
            self.watch = None
        return self.sock.recv(size)

    def read_head(self) -> bytes | None:
        """The next message head, or None on a clean close before any byte."""
        start = 0
        while (end := self.buf.find(b"\r\n\r\n", start)) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise _BadRequest("message head too large")
            start = max(0, len(self.buf) - 3)
            data = self._recv()
            if not data:
                if self.buf:
                    raise ConnectionError("connection closed inside a message head")
                return None
            self.buf += data
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        return head

    def read_line(self) -> bytes:
        while (end := self.buf.find(b"\n")) < 0:
            if len(self.buf) > _MAX_HEAD:
                raise _BadRequest("line too long")
            data = self._recv()
            if not data:
                raise ConnectionError("connection closed inside a chunked body")
            self.buf += data
        line = bytes(self.buf[: end + 1])
        del self.buf[: end + 1]
        return line

    def relay(self, dst: socket.socket, length: int | None, meter: _SizeMeter | None = None) -> None:
        """Copy ``length`` bytes (None: until close) to ``dst``, no buffering,
        through ``meter`` if given."""
        remaining = length
        if self.buf:
            take = len(self.buf) if remaining is None else min(remaining, len(self.buf))
            data = bytes(self.buf[:take])
            del self.buf[:take]
            _send(dst, data, meter)
            remaining = None if remaining is None else remaining - take
        while remaining is None or remaining > 0:
            data = self._recv(_CHUNK if remaining is None else min(_CHUNK, remaining))
            if not data:
                if remaining is None:
                    return
                raise ConnectionError("connection closed inside a body")
            _send(dst, data, meter)
            if remaining is not None:
                remaining -= len(data)

    def relay_chunked(self, dst: socket.socket, meter: _SizeMeter | None = None) -> None:
        """Copy one chunked body verbatim (chunks, last chunk, trailers)."""
        while True:
            line = self.read_line()
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise _BadRequest(f"bad chunk size line {line[:50]!r}") from None
            dst.sendall(line)
            if size == 0:
                while (trailer := self.read_line()) not in (b"\r\n", b"\n"):
                    dst.sendall(trailer)
                dst.sendall(trailer)
                return
            self.relay(dst, size, meter)
            self.relay(dst, 2)  # the chunk's CRLF

    def relay_body(self, dst: socket.socket, length: int | None, meter: _SizeMeter | None = None) -> None:
        if length == -1:
            self.relay_chunked(dst, meter)
        else:
            self.relay(dst, length, meter)


class EgressProxy:
    """An HTTP forward proxy on 127.0.0.1 that only connects where the policy
    allows. One thread per client connection; bodies stream through.

    Refusals answer 403 with ``X-Htbase-Egress-Refused: <reason>`` (the reason
    is also the status line's reason phrase, the only part of a refused CONNECT
    most clients report); an unreachable origin answers 502. With
    ``max_body_bytes``, a body is cut once it decodes past that many bytes,
    and a tunnel once it carried that many.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        max_body_bytes: int | None = None,
        connect_timeout: float = 10.0,
        idle_timeout: float = 120.0,
    ):
        self.policy = policy
        self.max_body_bytes = max_body_bytes
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        if self._listener is None:
            raise RuntimeError("the egress proxy is not running")
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> EgressProxy:
        listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), name="egress-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        with self._lock:
            open_sockets, self._sockets = self._sockets, set()
        for sock in open_sockets:
            self._close(sock)

    def __enter__(self) -> EgressProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- plumbing

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), name="egress-conn", daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        # No Nagle: heads and bodies go out in separate sends.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.idle_timeout)
        with self._lock:
            self._sockets.add(sock)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _serve(self, client: socket.socket) -> None:
        conn = _Stream(client, self.idle_timeout)
        try:
            while (head := conn.read_head()) is not None:
                request = _Message.parse(head)
                if request.start[0] == "CONNECT":
                    self._tunnel(conn, request)
                    return
                if not self._forward(conn, request):
                    return
        except _BadRequest as exc:
            self._reply(client, 400, "Bad Request", str(exc))
        except Exception as exc:  # the client went away or timed out; nothing to answer
            log(logger, logging.DEBUG, "egress proxy connection ended", error=repr(exc))
        finally:
            self._close(client)

    def _reply(self, client: socket.socket, status: int, phrase: str, body: str, headers=()) -> None:
        data = body.encode("utf-8")
        head = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
            *headers,
        ]
        with contextlib.suppress(OSError):
            client.sendall(_encode_head(f"HTTP/1.1 {status} {_header_safe(phrase)}", head) + data)

    def _open(self, client: socket.socket, host: str, port: int) -> socket.socket | None:
        """Resolve once, vet, connect to a vetted address; or answer 403/502."""
        try:
            addresses = self.policy.resolve(host, port)
        except EgressRefused as exc:
            reason = _header_safe(str(exc))
            log(logger, logging.WARNING, f"egress {reason}", host=host, port=port)
            self._reply(client, 403, reason, reason + "\n", [(REFUSED_HEADER, reason)])
            return None
        except (ResolutionError, ValueError) as exc:
            self._reply(client, 502, "Bad Gateway", f"{exc}\n")
            return None
        error: OSError | None = None
        for address in addresses:
            try:
                upstream = socket.create_connection((address, port), timeout=self.connect_timeout)
            except OSError as exc:
                error = exc
                continue
            self._track(upstream)
            return upstream
        log(logger, logging.INFO, "egress proxy cannot reach the origin", host=host, port=port, error=str(error))
        self._reply(client, 502, "Bad Gateway", f"cannot connect to {host}:{port}: {error}\n")
        return None

    def _tunnel(self, conn: _Stream, request: _Message) -> None:
        try:
            target = urlsplit("//" + request.start[1])
            host, port = target.hostname, target.port
        except ValueError:
            host = port = None
        if not host or not port:
            raise _BadRequest(f"CONNECT needs host:port, got {request.start[1][:100]!r}")
        upstream = self._open(conn.sock, host, port)
        if upstream is None:
            return
        try:
            conn.sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            carried = len(conn.buf)
            if conn.buf:
                upstream.sendall(conn.buf)
                conn.buf.clear()
            self._pipe(conn.sock, upstream, carried)
        except _TooLarge as exc:
            log(
                logger,
                logging.WARNING,
                "egress cut a tunnel over the size limit",
                host=host,
                port=port,
                reason=str(exc),
            )
        finally:
            self._close(upstream)

    def _pipe(self, a: socket.socket, b: socket.socket, carried: int) -> None:
        """Copy both ways until both sides have closed (half-closes pass on),
        or until more than ``max_body_bytes`` went through."""
        other = {a.fileno(): (a, b), b.fileno(): (b, a)}
        poll = select.poll()
        for fd in other:
            poll.register(fd, select.POLLIN)
        while other:
            events = poll.poll(self.idle_timeout * 1000)
            if not events:
                return
            for fd, _ in events:
                src, dst = other[fd]
                data = src.recv(_CHUNK)
                if data:
                    dst.sendall(data)
                    carried += len(data)
                    if self.max_body_bytes is not None and carried > self.max_body_bytes:
                        raise _TooLarge(f"tunnel carried over {self.max_body_bytes} bytes")
                else:
                    poll.unregister(fd)
                    del other[fd]
                    dst.shutdown(socket.SHUT_WR)

    def _forward(self, conn: _Stream, request: _Message) -> bool:
        """Forward one absolute-form request; True if the client connection
        may carry another request."""
        method, target, version = request.start
        try:
            url = urlsplit(target)
            host, port = url.hostname, url.port or 80
        except ValueError:
            host = None
        if not host or url.scheme.lower() != "http":
            raise _BadRequest(f"expected an absolute http:// URL or CONNECT, got {target[:100]!r}")
        length = request.body_length()
        if length is None:
            if request.get("transfer-encoding"):  # a request body must be delimited
                raise _BadRequest("request Transfer-Encoding must end with chunked")
            length = 0
        upstream = self._open(conn.sock, host, port)
        if upstream is None:
            return False
        answered = False
        try:
            path = urlunsplit(("", "", url.path or "/", url.query, ""))
            headers = [(k, v) for k, v in request.forwardable() if k.lower() not in ("host", "expect")]
            if self.max_body_bytes is not None:
                headers = [(k, _offered_codings(v) if k.lower() == "accept-encoding" else v) for k, v in headers]
            headers = [("Host", url.netloc.rpartition("@")[2]), *headers, ("Connection", "close")]
            upstream.sendall(_encode_head(f"{method} {path} HTTP/1.1", headers))
            if length and "100-continue" in request.tokens("expect"):
                # We relay the body right away, so tell the client to send it.
                conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            conn.relay_body(upstream, length)

            origin = _Stream(upstream, self.idle_timeout, watch=conn.sock)
            while True:
                head = origin.read_head()
                if head is None:
                    raise _UpstreamFailed("the origin closed the connection without answering")
                response = _Message.parse(head)
                status = int(response.start[1]) if response.start[1].isdigit() else 0
                if not 100 <= status <= 599:
                    raise _UpstreamFailed(f"malformed status line {head[:80]!r}")
                if status >= 200 or status == 101:
                    break
                conn.sock.sendall(_encode_head(" ".join(response.start), response.forwardable()))

            body: int | None
            if method == "HEAD" or status in (204, 304):
                body = 0
            else:
                body = response.body_length()
            meter = None
            if self.max_body_bytes is not None and body != 0:
                codings = response.token_list("content-encoding")
                undecodable = _UNDECODABLE.intersection(codings)
                if undecodable:
                    raise _UpstreamFailed(
                        f"Content-Encoding {', '.join(sorted(undecodable))} is not allowed: "
                        "its decoded size cannot be checked"
                    )
                meter = _SizeMeter(codings, self.max_body_bytes)
            keep_alive = (
                body is not None
                and version == "HTTP/1.1"
                and "close" not in request.tokens("connection") | request.tokens("proxy-connection")
            )
            # An origin must not be able to pose as the guard.
            headers = [(k, v) for k, v in response.forwardable() if k.lower() != REFUSED_HEADER.lower()]
            headers.append(("Connection", "keep-alive" if keep_alive else "close"))
            conn.sock.sendall(_encode_head(f"HTTP/1.1 {response.start[1]} {response.start[2]}", headers))
            answered = True
            origin.relay_body(conn.sock, body, meter)
            return keep_alive
        except _TooLarge as exc:
            log(logger, logging.WARNING, "egress cut a response over the size limit", url=target, reason=str(exc))
            return False
        except (_UpstreamFailed, _BadRequest, OSError) as exc:  # _ClientGone ends the connection
            if not answered:
                status, phrase = (504, "Gateway Timeout") if isinstance(exc, TimeoutError) else (502, "Bad Gateway")
                self._reply(conn.sock, status, phrase, f"no usable answer from {host}:{port}: {exc}\n")
            return False
        finally:
            self._close(upstream)
