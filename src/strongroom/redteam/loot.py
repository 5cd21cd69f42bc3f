"""Trying every key stolen data holds: what an attacker with a dump, the blobs or a backup gets.

:func:`try_every_key` collects every key-sized value in the loot (16- and
32-byte windows of each binary value and of each hex or base64 token, age
X25519 identities) and tries each at every layer of the key hierarchy, as an
attacker who has read strongroom's source would:

* as the root key or the barrier key, on every sealed ``keyring_entries`` row;
* as a KEK, on every ``wrapped_keys`` row;
* as an age file key, on the header MAC of every stolen blob; each age identity
  on the blobs' stanzas.

It returns what opened (nothing, for a deployment whose keys exist only
unsealed in memory) and how many trials were made. It reads files only and
never writes plaintext anywhere. The AAD layouts and the header MAC come from
the modules that define them (private names, on purpose: the attacker reads
the source too).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["LootReport", "try_every_key"]

#: Values longer than this are ciphertext payloads, not keys: only their aligned windows count.
_SMALL = 512
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{22,}")
_AGE_SECRET = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{58}")


@dataclass
class LootReport:
    """What the trials opened, and how many were made."""

    rows: int = 0
    blobs: int = 0
    candidates: int = 0
    trials: int = 0
    opened: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the evidence."""
        return (f"{self.candidates} candidate keys from {self.rows} stolen rows and files tried "
                f"{self.trials} times against {self.blobs} blobs and every sealed row: "
                + (f"OPENED {'; '.join(self.opened[:3])}" if self.opened else "nothing opened"))


def _windows(raw: bytes, out: set[bytes]) -> None:
    step = 1 if len(raw) <= _SMALL else 16
    for size in (16, 32):
        for i in range(0, len(raw) - size + 1, step):
            out.add(raw[i:i + size])


def _decodings(token: str) -> Iterator[bytes]:
    if len(token) % 2 == 0:
        with contextlib.suppress(ValueError):
            yield bytes.fromhex(token)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            yield decode(token + "=" * (-len(token) % 4))


class _Loot:
    def __init__(self) -> None:
        self.keys: set[bytes] = set()
        self.identities: set[str] = set()
        self.sealed: list[tuple[str, int, bytes]] = []  # keyring_entries: path, version, sealed
        self.wrapped: list[tuple[str, int, bytes]] = []  # wrapped_keys: blob, version, wrapped
        self.vault_ids: set[str] = set()
        self.rows = 0

    def value(self, v: Any) -> None:
        if isinstance(v, bytes | bytearray | memoryview):
            _windows(bytes(v), self.keys)
        elif isinstance(v, dict) and set(v) == {"b64"}:
            _windows(base64.b64decode(v["b64"]), self.keys)
        elif isinstance(v, str):
            self.identities.update(_AGE_SECRET.findall(v))
            for token in _TOKEN.findall(v):
                for raw in _decodings(token):
                    _windows(raw, self.keys)

    def row(self, table: str, row: dict[str, Any]) -> None:
        self.rows += 1
        for v in row.values():
            self.value(v)

        def raw(v: Any) -> bytes:
            return base64.b64decode(v["b64"]) if isinstance(v, dict) else bytes(v)

        if table == "keyring_entries":
            self.sealed.append((str(row["path"]), int(row["version"]), raw(row["sealed"])))
        elif table == "wrapped_keys":
            self.wrapped.append((str(row["blob_id"]), int(row["kek_version"]),
                                 raw(row["wrapped"])))
        elif table == "keyring_state":
            self.vault_ids.add(str(row["vault_id"]))


def _sqlite_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for r in conn.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from the file
                yield table, dict(r)
    finally:
        conn.close()


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _is_age(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(21) in (b"age-encryption.org/v1", b"strongroom/aes-256-gc")


def _collect(root: Path) -> tuple[_Loot, list[Path]]:
    loot, blobs = _Loot(), []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if _is_age(path):
            blobs.append(path)
        elif _is_sqlite(path):
            for table, row in _sqlite_rows(path):
                loot.row(table, row)
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                doc = json.loads(line)
                loot.row(doc["table"], doc["row"])
        elif path.stat().st_size <= 1 << 20:
            loot.rows += 1
            data = path.read_bytes()
            loot.value(data)
            loot.value(data.decode("utf-8", "replace"))
    return loot, blobs


def _opens(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes | None:
    try:
        return aead.decrypt(sealed[:12], sealed[12:], aad)
    except (InvalidTag, ValueError):
        return None


def _kek_values(plain: bytes) -> Iterable[bytes]:
    try:
        doc = json.loads(plain)
    except ValueError:
        return ()
    key = doc.get("key") if isinstance(doc, dict) else None
    return (base64.b64decode(key),) if isinstance(key, str) else ()


def try_every_key(root: Path) -> LootReport:
    """Try every key-sized value under ``root`` at every layer (see the module docstring)."""
    from strongroom.crypto import age
    from strongroom.keys.barrier import _entry_aad, derive_barrier_key
    from strongroom.keys.kek import _wrap_aad

    loot, blob_paths = _collect(root)
    report = LootReport(rows=loot.rows, blobs=len(blob_paths))
    headers = []
    for blob_path in blob_paths:
        header, data = age.read_header(age.BufferSource(blob_path.read_bytes()))
        headers.append((blob_path.name, header, bytes(data[:header.mac_input_size])))
    keys = set(loot.keys)
    report.candidates = len(keys) + len(loot.identities)
    # A wrong key fails on any row sealed under the right one, so each candidate is tried on
    # one row per sealing key (the barrier; each KEK version) and only a key that opens it is
    # used on the rest.
    for vid in loot.vault_ids:
        sealed = [(entry, sealed, _entry_aad(vid, entry, version))
                  for entry, version, sealed in loot.sealed]
        for k in [k for k in keys if len(k) == 32] if sealed else []:
            for key, layer in ((k, "barrier key"), (derive_barrier_key(k), "root key")):
                aead = AESGCM(key)
                report.trials += 1
                if _opens(aead, sealed[0][1], sealed[0][2]) is None:
                    continue
                for entry, body, aad in sealed:
                    plain = _opens(aead, body, aad)
                    if plain is not None:
                        report.opened.append(f"keyring entry {entry} with a {layer} from the loot")
                        keys.update(_kek_values(plain))
        by_version: dict[int, list[tuple[str, bytes, bytes]]] = {}
        for blob, version, wrapped in loot.wrapped:
            by_version.setdefault(version, []).append((blob, wrapped,
                                                       _wrap_aad(vid, version, blob)))
        for k in [k for k in keys if len(k) == 32]:
            aead = AESGCM(k)
            for rows in by_version.values():
                report.trials += 1
                if _opens(aead, rows[0][1], rows[0][2]) is None:
                    continue
                for blob, body, aad in rows:
                    plain = _opens(aead, body, aad)
                    if plain is not None:
                        report.opened.append(f"the file key of blob {blob} with a KEK from "
                                             "the loot")
                        keys.add(plain)
    for k in [k for k in keys if len(k) == age.FILE_KEY_SIZE]:
        mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=age._HEADER_LABEL).derive(k)  # the header MAC's key, as age derives it
        for name, header, mac_input in headers:
            report.trials += 1
            if hmac.new(mac_key, mac_input, sha256).digest() == header.mac:
                report.opened.append(f"blob {name} with a file key found in the loot")
    for name, header, _ in headers:
        for text in loot.identities:
            report.trials += 1
            if age.X25519Identity.parse(text).unwrap(header.stanzas) is not None:
                report.opened.append(f"blob {name} with an age identity found in the loot")
    return report
