"""A client of ``strongroom serve`` that signs every request (RFC 9421) with your identity.

::

    client = Client.from_env()     # STRONGROOM_URL, STRONGROOM_IDENTITY
    client.status()                # seal status (unsigned)
    client.weights()               # [{"name": ..., "version": ...}, ...]
    with client.open_shard("minilm", 1, "model.safetensors", purpose="load") as reader:
        reader.decrypt_chunk(0)    # plaintext in memory only

Errors come back as the :mod:`strongroom.errors` class the server named, with
its message, object and remedy. File keys released by the server are held
only while a reader is open and are zeroed after.

The client does not take the server's word for a manifest: it verifies the
manifest's DSSE signature with a pinned manifest key — ``STRONGROOM_MANIFEST_KEY``
(base64 raw Ed25519, as ``strongroom keys public --manifest`` prints it on the
vault host) or, when that is unset, the key first seen from this server URL,
recorded in ``~/.config/strongroom/known_servers`` (trust on first use, like
ssh's known_hosts; ``STRONGROOM_KNOWN_SERVERS`` names another file). A server
that later presents another key is refused (:class:`ServerKeyChanged`).
Shards are fetched in ranged requests of :data:`RANGE_SIZE` bytes, never held
whole in memory.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from strongroom import errors
from strongroom.crypto.age import Stanza
from strongroom.errors import (
    AccessDenied,
    ConfigError,
    IntegrityError,
    InvalidInput,
    ServerError,
    ServerKeyChanged,
)
from strongroom.server.operations import Operations
from strongroom.server.ranges import (
    _TIMEOUT,
    RANGE_SIZE,
    RangeFetcher,
    RangeSource,
    RemoteSource,
    _raise_for,
    _wrong_range,
)
from strongroom.server.signatures import sign_request

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from strongroom.crypto.age import AgeReader, ByteSource
    from strongroom.crypto.note import Ed25519Verifier
    from strongroom.keys.identity import Identity
    from strongroom.vault.manifest import FileEntry, Manifest

__all__ = ["RANGE_SIZE", "Client", "KnownServers", "RemoteSource", "ServerError",
           "ServerKeyChanged"]



def _decode_key(text: str, obj: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey as _Pub

    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return _Pub.from_public_bytes(raw)
    except ValueError:
        raise ConfigError("not a base64 raw Ed25519 public key (32 bytes)", obj=obj,
                          remedy="copy the key `strongroom keys public --manifest` prints "
                          "on the vault host") from None


def _known_servers_path() -> Path:
    explicit = os.environ.get("STRONGROOM_KNOWN_SERVERS")
    if explicit:
        return Path(explicit)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "strongroom" / "known_servers"


class KnownServers:
    """Manifest keys pinned per server URL on first use: ``<url> ed25519 <base64>`` lines."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or _known_servers_path()

    def _lines(self) -> list[list[str]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [p for p in map(str.split, lines) if len(p) == 3]

    def get(self, url: str, kind: str = "ed25519") -> str | None:
        """The key pinned for ``url`` (``ed25519``: the manifest key, base64; ``log-key``:
        the audit log's verifier key), or None."""
        return next((p[2] for p in self._lines() if p[0] == url and p[1] == kind), None)

    def add(self, url: str, key: str, kind: str = "ed25519") -> None:
        """Pin ``key`` of ``kind`` for ``url`` (append; the directory and file are private)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{url} {kind} {key}\n")

    def pins(self) -> list[tuple[str, str]]:
        """Every (url, manifest key base64) pinned, in file order."""
        return [(p[0], p[2]) for p in self._lines() if p[1] == "ed25519"]

    def replace(self, url: str, key_b64: str | None) -> bool:
        """Pin ``key_b64`` for ``url`` instead of what was pinned (None: forget ``url``).

        Written to a temporary file and renamed, so a crash leaves the old pins.
        Returns whether ``url`` had a pin.
        """
        lines = self._lines()
        had = any(p[0] == url and p[1] == "ed25519" for p in lines)
        # other kinds of pin for url (its log key) stay, unless url is forgotten
        keep = [p for p in lines if p[0] != url or (p[1] != "ed25519" and key_b64 is not None)]
        if key_b64 is not None:
            keep.append([url, "ed25519", key_b64])
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(" ".join(p) + "\n" for p in keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return had


class _ServerGate:
    """An age identity whose file key the server's gate releases (signed evidence per call).

    The server unwraps with the header it pinned itself, so the stanzas are not
    sent; the key is zeroed here once the reader holds it.
    """

    def __init__(self, client: Client, artifact: str, shard: str, blob: str,
                 purpose: str) -> None:
        self.client, self.artifact, self.shard = client, artifact, shard
        self.blob, self.purpose = blob, purpose

    def unwrap(self, stanzas: object) -> bytes | None:
        key = self.client.release(self.artifact, self.shard, self.blob, self.purpose)
        try:
            return bytes(key)
        finally:
            key[:] = bytes(len(key))


class _Released:
    """An age identity holding a file key the gate already released (zeroed once handed)."""

    def __init__(self, key: bytearray) -> None:
        self.key = key

    def unwrap(self, stanzas: object) -> bytes | None:
        try:
            return bytes(self.key)
        finally:
            self.key[:] = bytes(len(self.key))


class Client(Operations):
    """Signed requests to one strongroom server as one identity.

    Listings, reports and signed statements (people, compartments, caps, audit,
    break-glass, enrollments, ...) come from :class:`~strongroom.server.operations.Operations`.
    """

    def __init__(self, url: str, identity: Identity | None, *,
                 verify: bool | str = True, http: httpx.Client | None = None,
                 manifest_key: str | None = None,
                 known_servers: KnownServers | None = None) -> None:
        """``manifest_key``: the pinned manifest key (base64); default ``STRONGROOM_MANIFEST_KEY``,
        else trust on first use through ``known_servers``."""
        self.url = url.rstrip("/")
        self.identity = identity
        self.http = http or httpx.Client(base_url=self.url, timeout=_TIMEOUT, verify=verify)
        #: ranged reads over http.client (None: through ``self.http``, e.g. an injected transport)
        self._fetcher = RangeFetcher.for_url(self.url, verify) if http is None else None
        pinned = manifest_key or os.environ.get("STRONGROOM_MANIFEST_KEY") or None
        self._pinned = _decode_key(pinned, "STRONGROOM_MANIFEST_KEY") if pinned else None
        self.known_servers = known_servers or KnownServers()
        #: bytes per ranged request when reading a shard
        self.range_size = RANGE_SIZE
        #: whether the server's API version was checked (before the first request)
        self._version_checked = False

    @classmethod
    def from_env(cls) -> Client:
        """``STRONGROOM_URL``, ``STRONGROOM_IDENTITY`` and ``STRONGROOM_CA`` (a CA bundle)."""
        from strongroom.keys.config import KeysSettings
        from strongroom.keys.identity import Identity

        url = os.environ.get("STRONGROOM_URL")
        if not url:
            raise ConfigError("STRONGROOM_URL is not set", obj="STRONGROOM_URL")
        path = KeysSettings().identity
        identity = Identity.load(Path(path)) if path is not None else None
        return cls(url, identity, verify=os.environ.get("STRONGROOM_CA") or True)

    def close(self) -> None:
        """Close the connection pools."""
        self.http.close()
        if self._fetcher is not None:
            self._fetcher.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *,
                params: dict[str, Any] | None = None, signed: bool = True,
                headers: dict[str, str] | None = None) -> httpx.Response:
        """Send one request (signed unless ``signed=False``); raise the server's error.

        The first request of this client checks the server's API version first.
        """
        if signed and self.identity is None:
            self.signature_headers(method, path, b"")  # says which variable to set, offline
        if not self._version_checked:
            self.check_version()
        content = b"" if body is None else json.dumps(body).encode()
        req = self.http.build_request(method, path, params=params, content=content,
                                      headers={"content-type": "application/json",
                                               **(headers or {})})
        if signed:
            req.headers.update(self.signature_headers(method, req.url.raw_path.decode("ascii"),
                                                      content))
        try:
            response = self.http.send(req)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the server: {exc}", obj=self.url,
                              remedy="check STRONGROOM_URL and that `strongroom serve` runs"
                              ) from None
        _raise_for(response)
        return response

    def signature_headers(self, method: str, target: str, content: bytes) -> dict[str, str]:
        """The RFC 9421 headers signing ``method target`` with ``content`` as this identity."""
        if self.identity is None:
            raise AccessDenied("no identity to sign the request with",
                               obj="STRONGROOM_IDENTITY",
                               remedy="set STRONGROOM_IDENTITY to your identity file")
        return sign_request(self.identity.private_key, method, target, content)

    def get(self, path: str, **kw: Any) -> Any:
        """GET, JSON result."""
        return self.request("GET", path, **kw).json()

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        """POST, JSON result."""
        return self.request("POST", path, body, **kw).json()

    # -- operations --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Seal status."""
        return dict(self.get("/v1/sys/seal-status", signed=False))

    def unseal(self, submission: bytes) -> dict[str, Any]:
        """Submit one share (built with :func:`strongroom.keys.ceremony.build_submission`)."""
        return dict(self.post("/v1/sys/unseal",
                              {"submission": base64.b64encode(submission).decode()},
                              signed=False))

    def version(self) -> dict[str, Any]:
        """The server's ``version`` and ``api`` (unsigned)."""
        return dict(self.get("/v1/sys/version", signed=False))

    def check_version(self) -> None:
        """Refuse a server of another API major version; warn (stderr) on a minor skew."""
        from strongroom.server.api_version import check_server_version

        self._version_checked = True
        try:
            reported = self.version()
        except errors.NotFound:  # a server older than the version route
            reported = {}
        except BaseException:
            self._version_checked = False  # not checked: the next request tries again
            raise
        warning = check_server_version(reported, self.url)
        if warning:
            sys.stderr.write(warning)

    def seal(self, *, all_hosts: bool = False) -> dict[str, Any]:
        """Seal the server (a security officer's signed request); its seal status once sealed.

        ``all_hosts``: also order every host sharing its database to seal.
        """
        return dict(self.post("/v1/sys/seal", params={"all": "true"} if all_hosts else None))

    def weights(self) -> list[dict[str, Any]]:
        """Every artifact version."""
        return list(self.get("/v1/weights"))

    def manifest(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The server's manifest response (``manifest``, ``ref``, ``envelope``, ``manifest_key``).

        Unverified: use :meth:`verified_manifest` before trusting any hash in it.
        """
        params = {"version": version} if version is not None else None
        return dict(self.get(f"/v1/weights/{name}/manifest", params=params))

    def public_keys(self) -> dict[str, str]:
        """The server's claimed public keys (compare out of band before pinning)."""
        return dict(self.get("/v1/sys/public-keys"))

    def manifest_key(self, offered: str) -> Ed25519PublicKey:
        """The manifest key to verify with: the pinned one, or ``offered`` checked against
        (or recorded in) known_servers. ServerKeyChanged when the server's key changed."""
        if self._pinned is not None:
            return self._pinned
        key = _decode_key(offered, f"{self.url} manifest key")
        canonical = base64.b64encode(key.public_bytes_raw()).decode()
        known = self.known_servers.get(self.url)
        if known is None:
            self.known_servers.add(self.url, canonical)
            from strongroom.crypto.dsse import key_id

            sys.stderr.write(
                f"note: pinned {self.url}'s manifest key {key_id(key)} on first use in "
                f"{self.known_servers.path}; compare it with `strongroom keys public --manifest` "
                "on the vault host (`strongroom trust ls` lists pins)\n")
            return key
        if known != canonical:
            raise ServerKeyChanged(
                "the server's manifest signing key changed since it was first seen: it may be "
                "an impostor or a compromised server serving forged manifests",
                obj=f"{self.url} in {self.known_servers.path}",
                remedy="confirm the new key out of band (`strongroom keys public --manifest` on "
                "the vault host); if the vault's key really changed, delete this server's "
                "line from the known_servers file or set STRONGROOM_MANIFEST_KEY")
        return key

    def log_key(self, origin: str) -> Ed25519Verifier:
        """The audit log's checkpoint verifier: ``STRONGROOM_LOG_KEY`` (the ``<name>+<id>+<key>``
        line ``strongroom audit key`` prints on the vault host), else the key pinned for this
        server in known_servers, else the server's checkpoint key for the log ``origin``,
        pinned on first use. ServerKeyChanged when the server's key changed since."""
        from strongroom.crypto.note import Ed25519Verifier as _Verifier
        from strongroom.crypto.note import new_verifier

        pinned = os.environ.get("STRONGROOM_LOG_KEY") or None
        where = "STRONGROOM_LOG_KEY"
        if pinned is None:
            pinned, where = self.known_servers.get(self.url, "log-key"), str(self.known_servers.path)
        offered = _decode_key(str(self.public_keys().get("checkpoint", "")),
                              f"{self.url} checkpoint key")
        if pinned is None:
            key = _Verifier(origin, offered)
            self.known_servers.add(self.url, key.vkey, "log-key")
            sys.stderr.write(
                f"note: pinned {self.url}'s audit log key {key.vkey} on first use in "
                f"{self.known_servers.path}; compare it with `strongroom audit key` on the vault "
                "host\n")
            return key
        try:
            parsed = new_verifier(pinned)
        except (InvalidInput, ValueError):
            raise ConfigError("not a log verifier key <name>+<id>+<base64 key>", obj=where,
                              remedy="copy the line `strongroom audit key` prints on the "
                              "vault host") from None
        if not isinstance(parsed, _Verifier):
            raise ConfigError("the log key is a cosignature key, not the log's", obj=where,
                              remedy="copy the line `strongroom audit key` prints")
        if parsed.public.public_bytes_raw() != offered.public_bytes_raw():
            raise ServerKeyChanged(
                "the server's audit checkpoint key is not the pinned log key: it may be an "
                "impostor or a compromised server serving a forged log",
                obj=f"{self.url} (pinned in {where})",
                remedy="confirm the key out of band (`strongroom audit key` on the vault host); "
                "if the vault's key really changed, remove this server's log-key line from "
                "the known_servers file or set STRONGROOM_LOG_KEY")
        return parsed

    def verified_manifest(self, name: str, version: int | None = None) -> Manifest:
        """The manifest of ``name`` (``version``), its DSSE signature verified with the pinned key."""
        from strongroom.vault.manifest import Manifest

        out = self.manifest(name, version)
        obj = f"{name}@{version}" if version is not None else name
        key = self.manifest_key(str(out.get("manifest_key", "")))
        try:
            m = Manifest.verify(str(out.get("envelope", "")), key, obj=obj)
        except IntegrityError as exc:
            source = ("STRONGROOM_MANIFEST_KEY" if self._pinned is not None
                      else str(self.known_servers.path))
            raise IntegrityError(
                f"the manifest is not signed by the pinned manifest key ({exc.message})",
                obj=f"{obj} from {self.url}",
                remedy=f"do not use these weights; check the key pinned in {source} against "
                "`strongroom keys public --manifest` on the vault host") from None
        if m.name != name or (version is not None and m.version != version):
            raise IntegrityError(f"the server answered with the manifest of {m.ref}",
                                 obj=obj, remedy="the server is misbehaving; report it")
        return m

    def import_weights(self, path: Path, name: str, *, compartments: tuple[str, ...] = (),
                       new_version: bool = False) -> dict[str, Any]:
        """Stream a .safetensors file to the server, which scans and encrypts it (RAM only)."""
        if self.identity is None:
            raise AccessDenied("no identity to sign the upload with", obj="STRONGROOM_IDENTITY")
        if not self._version_checked:
            self.check_version()
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("compartment", c) for c in compartments]
        if new_version:
            params.append(("new_version", "true"))

        def body() -> Iterator[bytes]:
            with open(path, "rb") as f:
                yield from iter(lambda: f.read(1 << 20), b"")

        req = self.http.build_request("POST", f"/v1/weights/{name}/import", params=params,
                                      content=body(),
                                      headers={"content-type": "application/octet-stream",
                                               "content-length": str(path.stat().st_size)})
        req.headers.update(sign_request(self.identity.private_key, "POST",
                                        req.url.raw_path.decode("ascii"),
                                        body_sha256=digest.digest()))
        try:
            response = self.http.send(req)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the server: {exc}", obj=self.url) from None
        _raise_for(response)
        return dict(response.json())

    def byte_range(self, path: str, start: int, end: int, total: int) -> bytes:
        """Bytes ``[start, end)`` of the ``total``-byte resource at ``path`` (a 206, checked).

        Over http.client keep-alive connections (:class:`RangeFetcher`) when this
        client built its own transport, else through ``self.http``.
        """
        if self._fetcher is not None:
            return self._fetcher.get(self, path, start, end, total)
        response = self.request("GET", path, headers={"Range": f"bytes={start}-{end - 1}"})
        data = response.content
        expected = f"bytes {start}-{end - 1}/{total}"
        if response.status_code != 206 or response.headers.get("content-range") != expected \
                or len(data) != end - start:
            _wrong_range(path)
        return data

    def ciphertext(self, name: str, version: int, blob: str) -> bytes:
        """A shard's whole ciphertext (small blobs; readers use :meth:`blob_source`)."""
        return self.request("GET", f"/v1/weights/{name}/versions/{version}/blobs/{blob}").content

    def blob_source(self, name: str, version: int, blob: str, size: int, *,
                    window: int | None = None) -> RemoteSource:
        """A ranged reader over a shard's ciphertext of ``size`` bytes."""
        return RemoteSource(self, f"/v1/weights/{name}/versions/{version}/blobs/{blob}", size,
                            window=window or self.range_size)

    def release(self, artifact: str, shard: str, blob: str, purpose: str, *,
                grant: str | None = None) -> bytearray:
        """Sign release evidence and ask the server's gate for the file key (zero it after)."""
        from strongroom.access.evidence import make_evidence

        if self.identity is None:
            raise AccessDenied("no identity to sign the release evidence with",
                               obj="STRONGROOM_IDENTITY")
        evidence = make_evidence(self.identity.private_key, artifact=artifact, shard=shard,
                                 blob_id=blob, purpose=purpose, grant=grant)
        out = self.post("/v1/keys/release", {"artifact": artifact, "shard": shard,
                                              "purpose": purpose, "evidence": evidence})
        return bytearray(base64.b64decode(out["file_key"]))

    def release_many(self, artifact: str, shards: Sequence[tuple[str, str]], purpose: str, *,
                     grant: str | None = None) -> list[bytearray]:
        """File keys of several shards of ``artifact`` ((path, blob id) each) in one request,
        under one signed load evidence; in the order given (zero them after use).

        The gate decides, charges and audits each shard on its own: if any was refused,
        the keys the others got are zeroed and the first refusal is raised.
        """
        from strongroom.access.evidence import make_load_evidence

        if self.identity is None:
            raise AccessDenied("no identity to sign the release evidence with",
                               obj="STRONGROOM_IDENTITY")
        evidence = make_load_evidence(self.identity.private_key, artifact=artifact,
                                      shards=list(shards), purpose=purpose, grant=grant)
        paths = [path for path, _ in shards]
        try:
            out = self.post("/v1/keys/release-many", {"artifact": artifact, "shards": paths,
                                                       "purpose": purpose, "evidence": evidence})
        except ServerError as exc:
            if exc.message.startswith("HTTP 404"):  # no strongroom error: the route is missing
                raise errors.NotFound("the server has no /v1/keys/release-many (older than "
                                      "this client)", obj=self.url,
                                      remedy="release shard by shard, or upgrade the server"
                                      ) from None
            raise
        keys: list[bytearray] = []
        refusal: errors.StrongroomError | None = None
        try:
            items = out.get("keys") if isinstance(out, dict) else None
            if not isinstance(items, list) or len(items) != len(shards):
                raise ServerError("the server's release-many answer does not match the request",
                                  obj=f"{artifact} ({len(shards)} shards)",
                                  remedy="the server is misbehaving; report it")
            for (path, blob), item in zip(shards, items, strict=True):
                if not isinstance(item, dict) or item.get("shard") != path \
                        or item.get("blob") != blob:
                    raise ServerError("the server answered for another shard",
                                      obj=f"{artifact}/{path}",
                                      remedy="the server is misbehaving; report it")
                error = item.get("error")
                if isinstance(error, dict):
                    refusal = refusal or errors.from_wire(
                        str(error.get("type", "")), str(error.get("error", "")),
                        obj=error.get("object"), remedy=error.get("remedy"))
                    continue
                text = item.get("file_key")
                if not isinstance(text, str) or not text:
                    raise ServerError("the server answered neither a key nor a refusal",
                                      obj=f"{artifact}/{path}",
                                      remedy="the server is misbehaving; report it")
                keys.append(bytearray(base64.b64decode(text)))
            if refusal is not None:
                raise refusal
        except BaseException:
            for key in keys:
                key[:] = bytes(len(key))
            raise
        return keys

    def attest_nonce(self) -> bytes:
        """A single-use nonce from the server's gate, to bind in the enclave's report data."""
        return base64.b64decode(self.post("/v1/keys/attest/nonce", {})["nonce"])

    def release_attested(self, artifact: str, shard: str, blob: str, purpose: str, *,
                         recipient: str, platform: str = "", report: bytes = b"",
                         collateral: Sequence[bytes] = (), nonce: bytes = b"",
                         grant: str | None = None) -> Stanza:
        """The file key as an age stanza to ``recipient`` (the enclave's ephemeral key).

        The first release of an ephemeral key carries the evidence (``report`` with
        its ``collateral`` and the gate's ``nonce``); later ones only the recipient.
        """
        from strongroom.access.evidence import make_evidence

        if self.identity is None:
            raise AccessDenied("no identity to sign the release evidence with",
                               obj="STRONGROOM_IDENTITY")
        evidence = make_evidence(self.identity.private_key, artifact=artifact, shard=shard,
                                 blob_id=blob, purpose=purpose, grant=grant)
        out = self.post("/v1/keys/release-attested", {
            "artifact": artifact, "shard": shard, "purpose": purpose, "evidence": evidence,
            "recipient": recipient, "platform": platform, "report": _b64(report),
            "collateral": [_b64(c) for c in collateral], "nonce": _b64(nonce)})
        return Stanza(out["stanza_type"], tuple(out["stanza_args"]),
                      base64.b64decode(out["stanza_body"]))

    @contextlib.contextmanager
    def open_shard(self, name: str, version: int | None, path: str, *,
                   purpose: str) -> Iterator[AgeReader]:
        """A decrypting reader over one shard of the verified manifest, read by range."""
        m = self.verified_manifest(name, version)
        with self._open_entry(m, path, purpose=purpose) as (reader, _source):
            yield reader

    @contextlib.contextmanager
    def _open_entry(self, m: Manifest, path: str, *, purpose: str
                    ) -> Iterator[tuple[AgeReader, RemoteSource]]:
        entry = next((f for f in m.files if f.path == path), None)
        if entry is None:
            raise errors.NotFound("no such shard", obj=f"{m.ref}/{path}")
        source = self.blob_source(m.name, m.version, entry.blob, entry.ct_size)
        with self.open_reader(m, entry, purpose, source=source) as reader:
            yield reader, source

    @contextlib.contextmanager
    def open_reader(self, m: Manifest, entry: FileEntry, purpose: str, *,
                    source: ByteSource | None = None,
                    file_key: bytearray | None = None) -> Iterator[AgeReader]:
        """A decrypting reader over one shard: its header checked against the signed
        manifest's pin, its file key released by the server's gate (zeroed on exit).

        ``source`` defaults to a :class:`RangeSource` (exact ranged reads).
        ``file_key``: the shard's key already released (by :meth:`release_many`); it is
        zeroed once the reader holds it, and the gate is not asked again.
        """
        from strongroom.crypto import age
        from strongroom.vault.shards import HEADER_MISMATCH, header_pinned

        obj = f"{m.ref}/{entry.path}"
        if source is None:
            source = RangeSource(
                self, f"/v1/weights/{m.name}/versions/{m.version}/blobs/{entry.blob}",
                entry.ct_size)

        def pinned(header: age.Header, head: bytes | memoryview) -> None:
            if not header_pinned(header, head, entry.header_sha256):
                raise IntegrityError(HEADER_MISMATCH, obj=obj)

        gate: _ServerGate | _Released = (
            _ServerGate(self, m.ref, entry.path, entry.blob, purpose) if file_key is None
            else _Released(file_key))
        try:
            with age.AgeReader.open(source, [gate], plaintext_size=entry.size,
                                    check_header=pinned) as reader:
                yield reader
        finally:
            if file_key is not None:
                file_key[:] = bytes(len(file_key))  # also when the header check refused

    def verify(self, name: str, version: int | None = None, *, purpose: str = "verify"
               ) -> tuple[str, int, int]:
        """Decrypt every shard chunk by chunk and check its ciphertext and plaintext SHA-256
        against the verified manifest: (ref, files, bytes)."""
        m = self.verified_manifest(name, version)
        total = 0
        for entry in m.files:
            obj = f"{m.ref}/{entry.path}"
            digest = hashlib.sha256()
            with self._open_entry(m, entry.path, purpose=purpose) as (reader, source):
                for i in range(reader.num_chunks):
                    digest.update(reader.decrypt_chunk(i))
                ct = source.sha256()
            if ct is None:
                raise IntegrityError("the ciphertext was not read in order; cannot check it",
                                     obj=obj)
            if ct != entry.ct_sha256:
                raise IntegrityError("ciphertext SHA-256 does not match the manifest", obj=obj)
            if digest.hexdigest() != entry.sha256:
                raise IntegrityError("plaintext SHA-256 does not match the manifest", obj=obj)
            total += entry.size
        return m.ref, len(m.files), total


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
