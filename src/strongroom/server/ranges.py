"""Reading a shard's ciphertext from a server by byte range.

* :class:`RangeFetcher` — signed ranged GETs over ``http.client`` keep-alive
  connections (the full-load path: ~4x less CPU per MiB than httpx);
* :class:`RangeSource` — an age ``ByteSource`` that fetches exactly the bytes
  each read asks for (lazy loads read only a tensor's chunks);
* :class:`RemoteSource` — an age ``ByteSource`` over windows of
  :data:`RANGE_SIZE`, hashing in-order reads (``weights verify``).

Every response is checked: status 206, ``Content-Range`` and length.
:class:`~strongroom.server.client.Client` builds these; use it, not them.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import threading
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, NoReturn

import httpx

from strongroom import errors
from strongroom.errors import AccessDenied, IntegrityError, ServerError, StrongroomError

if TYPE_CHECKING:
    from strongroom.server.client import Client

__all__ = ["RANGE_SIZE", "RangeFetcher", "RangeSource", "RemoteSource"]

_TIMEOUT = httpx.Timeout(30.0, read=300.0)
#: Bytes per ranged request when reading a shard's ciphertext.
RANGE_SIZE = 4 << 20


class RangeFetcher:
    """Signed ranged GETs over ``http.client`` keep-alive connections: the full-load path.

    httpx spends about 2 ms of CPU per MiB received; ``http.client`` reads a
    response of known length straight into one ``bytes`` (about 0.5 ms/MiB).
    Each request takes an idle connection from a pool (one per concurrent
    request, so one per load thread) and puts it back once the body is read.
    Requests are signed by :meth:`Client.signature_headers` exactly as
    :meth:`Client.request` signs them; TLS when the URL is https, with the
    SSL context httpx builds for the same ``verify`` (``STRONGROOM_CA``).
    """

    def __init__(self, url: str, verify: bool | str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @classmethod
    def for_url(cls, url: str, verify: bool | str) -> RangeFetcher | None:
        """A fetcher for ``url``, or None when httpx would go through a proxy for it."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            return None
        proxies = urllib.request.getproxies()
        proxy = proxies.get(scheme) or proxies.get("all")
        host = urllib.parse.urlsplit(url).hostname or ""
        if proxy and not urllib.request.proxy_bypass(host):
            return None
        return cls(url, verify)

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if isinstance(self.verify, str):  # a CA bundle file or directory, as httpx reads it
                self._ssl = (ssl.create_default_context(capath=self.verify)
                             if os.path.isdir(self.verify)
                             else ssl.create_default_context(cafile=self.verify))
            else:
                self._ssl = httpx.create_ssl_context(verify=self.verify)
        return self._ssl

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=_TIMEOUT.connect,
                                               context=self._context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=_TIMEOUT.connect)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(_TIMEOUT.read)
        return conn

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def get(self, client: Client, path: str, start: int, end: int, total: int) -> bytes:
        """Bytes ``[start, end)`` of the ``total``-byte resource at ``path``: a 206, checked."""
        target = self.prefix + path
        for attempt in (0, 1):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect()
                headers = {"Range": f"bytes={start}-{end - 1}",
                           "content-type": "application/json",
                           **client.signature_headers("GET", target, b"")}
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
            except (http.client.HTTPException, OSError) as exc:
                if conn is not None:
                    conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: sign anew
                raise ServerError(f"cannot reach the server: {exc!r}", obj=client.url,
                                  remedy="check STRONGROOM_URL and that `strongroom serve` "
                                  "runs") from None
            try:
                data = self._body(client, response, path, start, end, total)
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def _body(self, client: Client, response: http.client.HTTPResponse, path: str,
              start: int, end: int, total: int) -> bytes:
        if response.status >= 400:
            body = response.read(1 << 20)
            scheme = "https" if self.https else "http"
            _raise_for(httpx.Response(
                response.status, headers=response.getheaders(), content=body,
                request=httpx.Request("GET", f"{scheme}://{self.host}:{self.port}{self.prefix}{path}")))
        length = response.getheader("content-length")
        if response.status != 206 \
                or response.getheader("content-range") != f"bytes {start}-{end - 1}/{total}" \
                or (length is not None and length.strip() != str(end - start)):
            _wrong_range(path)  # the body is not read: the connection is dropped
        try:
            data = response.read(end - start)
            extra = response.read(1)
        except (http.client.HTTPException, OSError) as exc:
            if isinstance(exc, http.client.IncompleteRead):
                _wrong_range(path)
            raise ServerError(f"the connection broke during a ranged read: {exc!r}",
                              obj=client.url, remedy="retry; check the server's logs") from None
        if len(data) != end - start or extra:
            _wrong_range(path)
        return data


def _wrong_range(path: str) -> NoReturn:
    raise IntegrityError("the server did not return the byte range asked for",
                         obj=path, remedy="the blob's size may not match the "
                         "manifest; check the server's blob store")


class RemoteSource:
    """A :class:`~strongroom.crypto.age.ByteSource` over a blob on the server, read by range.

    Holds at most two windows of ``window`` bytes. While windows are fetched
    in order from the start it hashes them, so that a full sequential read can
    be checked against the manifest's ciphertext SHA-256 (:meth:`sha256`).
    """

    def __init__(self, client: Client, path: str, size: int, *,
                 window: int = RANGE_SIZE) -> None:
        self.client = client
        self.path = path
        self.size = size
        self.window = window
        self.requests = 0
        self._windows: dict[int, bytes] = {}
        self._hash = hashlib.sha256()
        self._hashed = 0  # windows hashed in order so far
        self._in_order = True

    def __len__(self) -> int:
        return self.size

    def _fetch(self, index: int) -> bytes:
        data = self._windows.get(index)
        if data is not None:
            return data
        start = index * self.window
        end = min(start + self.window, self.size)
        data = self.client.byte_range(self.path, start, end, self.size)
        self.requests += 1
        if index == self._hashed and self._in_order:
            self._hash.update(data)
            self._hashed += 1
        elif index > self._hashed:
            self._in_order = False
        if len(self._windows) >= 2:  # keep two: a read may straddle a window boundary
            del self._windows[max(self._windows, key=lambda i: abs(i - index))]
        self._windows[index] = data
        return data

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, fetched a window at a time."""
        end = min(offset + size, self.size)
        out = bytearray()
        pos = offset
        while pos < end:
            index = pos // self.window
            data = self._fetch(index)
            lo = pos - index * self.window
            piece = data[lo: lo + (end - pos)]
            out += piece
            pos += len(piece)
        return bytes(out)

    def sha256(self) -> str | None:
        """Hex SHA-256 of the whole ciphertext if every window was read in order, else None."""
        windows = -(-self.size // self.window)
        if not self._in_order or self._hashed != windows:
            return None
        return self._hash.hexdigest()


class RangeSource:
    """A :class:`~strongroom.crypto.age.ByteSource` fetching exactly the bytes each read asks for.

    No window and no cache: the age reader asks for whole chunk spans, from
    several threads at once during a full load, so a lazy read of one tensor
    fetches only its chunks and a full load overlaps fetching with decryption.
    """

    def __init__(self, client: Client, path: str, size: int) -> None:
        self.client = client
        self.path = path
        self.size = size
        self.requests = 0
        self.fetched = 0

    def __len__(self) -> int:
        return self.size

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``, in one ranged request."""
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        data = self.client.byte_range(self.path, offset, end, self.size)
        self.requests += 1
        self.fetched += len(data)
        return data


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "error" not in body:
        detail = body.get("detail") if isinstance(body, dict) else response.text[:300]
        raise ServerError(f"HTTP {response.status_code}: {detail}",
                          obj=str(response.request.url.path))
    default = AccessDenied if response.status_code in (401, 403) else StrongroomError
    raise errors.from_wire(str(body.get("type", "")), str(body["error"]),
                           obj=body.get("object"), remedy=body.get("remedy"), default=default)
