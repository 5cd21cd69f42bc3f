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
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from strongroom import errors
from strongroom.errors import AccessDenied, ConfigError, IntegrityError, StrongroomError
from strongroom.server.signatures import sign_request

if TYPE_CHECKING:
    from strongroom.crypto.age import AgeReader
    from strongroom.keys.identity import Identity

__all__ = ["Client", "ServerError"]

_TIMEOUT = httpx.Timeout(30.0, read=300.0)


class ServerError(StrongroomError):
    """The server failed in a way it did not describe (5xx without a strongroom error)."""

    exit_code = 9


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
    cls = getattr(errors, str(body.get("type", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, StrongroomError)):
        cls = AccessDenied if response.status_code in (401, 403) else StrongroomError
    raise cls(str(body["error"]), obj=body.get("object"), remedy=body.get("remedy"))


class Client:
    """Signed requests to one strongroom server as one identity."""

    def __init__(self, url: str, identity: Identity | None, *,
                 verify: bool | str = True, http: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self.identity = identity
        self.http = http or httpx.Client(base_url=self.url, timeout=_TIMEOUT, verify=verify)

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
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *,
                params: dict[str, Any] | None = None, signed: bool = True) -> httpx.Response:
        """Send one request (signed unless ``signed=False``); raise the server's error."""
        content = b"" if body is None else json.dumps(body).encode()
        req = self.http.build_request(method, path, params=params, content=content,
                                      headers={"content-type": "application/json"})
        if signed:
            if self.identity is None:
                raise AccessDenied("no identity to sign the request with",
                                   obj="STRONGROOM_IDENTITY",
                                   remedy="set STRONGROOM_IDENTITY to your identity file")
            req.headers.update(sign_request(self.identity.private_key, method,
                                            req.url.raw_path.decode("ascii"), content))
        try:
            response = self.http.send(req)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the server: {exc}", obj=self.url,
                              remedy="check STRONGROOM_URL and that `strongroom serve` runs"
                              ) from None
        _raise_for(response)
        return response

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

    def weights(self) -> list[dict[str, Any]]:
        """Every artifact version."""
        return list(self.get("/v1/weights"))

    def manifest(self, name: str, version: int | None = None) -> dict[str, Any]:
        """The manifest (``manifest``), its ref and signed envelope."""
        params = {"version": version} if version is not None else None
        return dict(self.get(f"/v1/weights/{name}/manifest", params=params))

    def import_weights(self, path: Path, name: str, *, compartments: tuple[str, ...] = (),
                       new_version: bool = False) -> dict[str, Any]:
        """Stream a .safetensors file to the server, which scans and encrypts it (RAM only)."""
        if self.identity is None:
            raise AccessDenied("no identity to sign the upload with", obj="STRONGROOM_IDENTITY")
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

    def ciphertext(self, name: str, version: int, blob: str) -> bytes:
        """A shard's ciphertext."""
        return self.request("GET", f"/v1/weights/{name}/versions/{version}/blobs/{blob}").content

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

    @contextlib.contextmanager
    def open_shard(self, name: str, version: int | None, path: str, *,
                   purpose: str) -> Iterator[AgeReader]:
        """A decrypting reader over one shard, checked against the manifest's hashes."""
        from strongroom.crypto.age import AgeReader

        m = self.manifest(name, version)["manifest"]
        ref = f"{m['name']}@{m['version']}"
        entry = next((f for f in m["files"] if f["path"] == path), None)
        if entry is None:
            raise errors.NotFound("no such shard", obj=f"{ref}/{path}")
        data = self.ciphertext(m["name"], int(m["version"]), entry["blob"])
        if hashlib.sha256(data).hexdigest() != entry["ct_sha256"]:
            raise IntegrityError("ciphertext SHA-256 does not match the manifest",
                                 obj=f"{ref}/{path}")
        key = self.release(ref, path, entry["blob"], purpose)
        reader = None
        try:
            reader = AgeReader.with_file_key(data, bytes(key), plaintext_size=int(entry["size"]))
            yield reader
        finally:
            key[:] = bytes(len(key))
            if reader is not None:
                reader.close()

    def verify(self, name: str, version: int | None = None, *, purpose: str = "verify"
               ) -> tuple[str, int, int]:
        """Decrypt every shard in memory and check its plaintext SHA-256: (ref, files, bytes)."""
        m = self.manifest(name, version)["manifest"]
        ref = f"{m['name']}@{m['version']}"
        total = 0
        for entry in m["files"]:
            digest = hashlib.sha256()
            with self.open_shard(m["name"], int(m["version"]), entry["path"],
                                 purpose=purpose) as reader:
                for i in range(reader.num_chunks):
                    digest.update(reader.decrypt_chunk(i))
            if digest.hexdigest() != entry["sha256"]:
                raise IntegrityError("plaintext SHA-256 does not match the manifest",
                                     obj=f"{ref}/{entry['path']}")
            total += int(entry["size"])
        return ref, len(m["files"]), total
