"""Multi-key signoff to run code: the gateway runs only code that k code owners signed.

A *code release* is a DSSE envelope (canonical JSON, Ed25519) whose statement
lists the SHA-256 of every module of the ``strongroom`` package and names the
gateway's entry module. Code owners sign it one after another (each with their
own identity file), and the gateway checks it before it loads any weight::

    env = sign_release([alice])                          # first owner: creates it
    env = add_signature(env, bob)                        # second owner co-signs
    verify_release(env, owners=[alice.public, bob.public, carol.public], threshold=2)

:func:`verify_release` hashes the code on disk *and* checks that every
``strongroom`` module already imported was loaded from a signed file; a
changed, added or missing module stops it with an
:class:`~strongroom.errors.IntegrityError` naming the file. Never pass the
owners' keys from the same place an attacker could write the code to: pin them
(in the sealed keyring, or a root-owned configuration). Compiled ``__pycache__``
files are not covered; run the gateway with ``PYTHONDONTWRITEBYTECODE=1`` from a
read-only installation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strongroom.crypto.dsse import canonical_json, key_id, pae, sign_statement
from strongroom.crypto.hybrid_sig import add_mldsa_signature, verify_pinned
from strongroom.errors import ConfigError, IntegrityError, InvalidInput
from strongroom.keys.identity import Identity, PublicIdentity

__all__ = [
    "ENTRY",
    "PAYLOAD_TYPE",
    "CodeRelease",
    "CodeWatch",
    "add_signature",
    "check_installed",
    "hash_tree",
    "package_root",
    "release_statement",
    "sign_release",
    "verify_release",
]

PAYLOAD_TYPE = "application/vnd.strongroom.code-release+json"
STATEMENT_TYPE = "strongroom.code-release/v1"
#: The module the gateway starts from; named in every release.
ENTRY = "strongroom.gateway.server"


def package_root() -> Path:
    """The directory of the installed ``strongroom`` package."""
    import strongroom

    return Path(strongroom.__file__).resolve().parent


def hash_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every ``.py`` file under ``root`` (``strongroom/...`` posix paths)."""
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = f"{root.name}/{path.relative_to(root).as_posix()}"
        with open(path, "rb") as f:
            files[rel] = hashlib.file_digest(f, "sha256").hexdigest()
    return files


def release_statement(root: Path | None = None, *, entry: str = ENTRY) -> dict[str, Any]:
    """The statement a release signs for the code under ``root``."""
    import strongroom

    root = root or package_root()
    return {
        "_type": STATEMENT_TYPE,
        "package": root.name,
        "version": strongroom.__version__,
        "entry": entry,
        "files": hash_tree(root),
    }


@dataclass(frozen=True)
class CodeRelease:
    """A verified release: what was signed, and by whom."""

    version: str
    entry: str
    files: Mapping[str, str]
    signers: tuple[str, ...]


def sign_release(identities: Sequence[Identity], root: Path | None = None) -> str:
    """A new release envelope for the code under ``root``, signed by each identity."""
    if not identities:
        raise InvalidInput("a release needs at least one code owner's signature",
                           obj="code release", remedy="pass --identity")
    env = sign_statement(release_statement(root), PAYLOAD_TYPE,
                         *(i.private_key for i in identities))
    for i in identities:  # hybrid code owners sign with ML-DSA-65 too
        if i.mldsa_key is not None:
            env = add_mldsa_signature(env, PAYLOAD_TYPE, i.mldsa_key)
    return env


def _load(envelope: str) -> dict[str, Any]:
    try:
        env = json.loads(envelope)
        if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError("payload type")
        base64.b64decode(env["payload"], validate=True)
        if not isinstance(env["signatures"], list):
            raise ValueError("signatures")
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"not a code release envelope ({exc})", obj="code release") from None
    return env


def add_signature(envelope: str, identity: Identity, root: Path | None = None) -> str:
    """Co-sign an existing release, after checking it describes the code under ``root``."""
    env = _load(envelope)
    payload = base64.b64decode(env["payload"])
    statement = json.loads(payload)
    _compare(statement, release_statement(root), root or package_root())
    if canonical_json(statement) != payload:
        raise IntegrityError("release payload is not canonical JSON", obj="code release")
    public = identity.private_key.public_key()
    kid = key_id(public)
    if any(s.get("keyid") == kid for s in env["signatures"] if isinstance(s, dict)):
        raise InvalidInput("this identity already signed the release", obj=identity.public.principal)
    signature = identity.private_key.sign(pae(PAYLOAD_TYPE, payload))
    env["signatures"].append({"keyid": kid, "sig": base64.b64encode(signature).decode()})
    out = json.dumps(env, sort_keys=True, separators=(",", ":"))
    if identity.mldsa_key is not None:  # a hybrid code owner signs with ML-DSA-65 too
        out = add_mldsa_signature(out, PAYLOAD_TYPE, identity.mldsa_key)
    return out


def _compare(signed: Mapping[str, Any], actual: Mapping[str, Any], root: Path) -> None:
    if signed.get("_type") != STATEMENT_TYPE or not isinstance(signed.get("files"), dict):
        raise IntegrityError("not a code release statement", obj="code release")
    want: Mapping[str, str] = signed["files"]
    have: Mapping[str, str] = actual["files"]
    base = root.parent
    for rel in sorted(set(want) | set(have)):
        where = str(base / rel)
        if rel not in have:
            raise IntegrityError("signed module is missing", obj=where,
                                 remedy="reinstall the signed release")
        if rel not in want:
            raise IntegrityError("module is not in the signed release (added after signing)",
                                 obj=where, remedy="remove it, or have k code owners sign a new release")
        if want[rel] != have[rel]:
            raise IntegrityError("module changed since the release was signed", obj=where,
                                 remedy="restore the signed code, or have k code owners sign a new release")
    if signed.get("entry") != actual["entry"]:
        raise IntegrityError(f"release names entry {signed.get('entry')!r}, not {actual['entry']!r}",
                             obj="code release")


def _check_loaded(root: Path, files: Mapping[str, str]) -> None:
    """Every imported strongroom module must come from a signed file under ``root``."""
    for name, module in list(sys.modules.items()):
        if name != root.name and not name.startswith(root.name + "."):
            continue
        file = getattr(module, "__file__", None)
        if file is None:
            continue
        path = Path(file).resolve()
        try:
            rel = f"{root.name}/{path.relative_to(root).as_posix()}"
        except ValueError:
            raise IntegrityError(f"module {name} was loaded from outside the signed package",
                                 obj=str(path), remedy="remove it from the import path") from None
        if rel not in files:
            raise IntegrityError(f"module {name} is not in the signed release", obj=str(path))


def check_installed(envelope: str, root: Path | None = None) -> str:
    """The release's version after checking its file hashes against the code under ``root``.

    The signatures are *not* checked: this is the start check of a host whose pinned code
    owners are out of reach until its keyring is unsealed (``strongroom serve``), which
    verifies them later with :func:`verify_release`. A changed, added or missing module
    stops it with an :class:`~strongroom.errors.IntegrityError` naming the file.
    """
    env = _load(envelope)
    try:
        statement = json.loads(base64.b64decode(env["payload"]))
        if not isinstance(statement, dict):
            raise ValueError("statement")
    except ValueError:
        raise IntegrityError("the release payload is not a JSON statement",
                             obj="code release") from None
    root = (root or package_root()).resolve()
    _compare(statement, release_statement(root), root)
    return str(statement.get("version"))


class CodeWatch:
    """Re-runs a code check before the first use after each interval; a change found sticks.

    The gateway and ``strongroom serve`` both hold one: ``check`` is
    :func:`verify_release` over the release they started from, and raises an
    :class:`~strongroom.errors.IntegrityError` naming the file that changed.
    ``checked_at`` is when it last passed (None: check at the first :meth:`poll`).
    """

    def __init__(self, check: Callable[[], object], *, checked_at: float | None = None) -> None:
        self._check = check
        self._checked = checked_at
        self._lock = threading.Lock()
        #: What changed (then every request is refused until a restart), else None.
        self.changed: str | None = None
        #: The file named by the failed check.
        self.file: str | None = None

    def due(self, now: float, interval_s: float) -> bool:
        """True when :meth:`poll` would run the check (read without the lock: a stale answer
        costs one extra :meth:`poll`, which decides under it)."""
        return self.changed is None and (self._checked is None
                                         or now - self._checked >= interval_s)

    def poll(self, now: float, interval_s: float) -> tuple[str | None, bool]:
        """What changed (None: nothing), and True only on the call that found it.

        Errors other than an IntegrityError (a sealed keyring, no owners pinned)
        propagate and leave the check due again at the next call.
        """
        with self._lock:
            if self.changed is not None:
                return self.changed, False
            if self._checked is not None and now - self._checked < interval_s:
                return None, False
            try:
                self._check()
            except IntegrityError as exc:
                self.changed = f"{exc.message} ({exc.obj})"
                self.file = str(exc.obj)
                return self.changed, True
            self._checked = now
            return None, False


def verify_release(
    envelope: str,
    owners: Sequence[PublicIdentity],
    threshold: int,
    root: Path | None = None,
) -> CodeRelease:
    """Check ``threshold`` of ``owners`` signed a release matching the code that runs here."""
    if threshold < 1 or threshold > len(owners):
        raise ConfigError(f"release threshold {threshold} with {len(owners)} code owner(s)",
                          obj="code release", remedy="need 1 <= threshold <= number of owners")
    trusted = {o.key_id: o.public_key for o in owners}
    if len(trusted) != len(owners):
        raise ConfigError("a code owner key is listed twice", obj="code release")
    env = _load(envelope)
    pq = {o.key_id: key for o in owners if (key := o.mldsa_key) is not None}
    statement = verify_pinned(envelope, PAYLOAD_TYPE, trusted, pq=pq, threshold=threshold,
                              obj="code release")
    installed = package_root()
    root = (root or installed).resolve()
    actual = release_statement(root)
    _compare(statement, actual, root)
    if root == installed:  # a copy elsewhere is checked on disk only (it is not what runs)
        _check_loaded(root, statement["files"])
    names = {o.key_id: o.principal for o in owners}
    signers = tuple(sorted({names[s["keyid"]] for s in env["signatures"]
                            if isinstance(s, dict) and s.get("keyid") in names}))
    return CodeRelease(str(statement.get("version")), str(statement["entry"]),
                       dict(statement["files"]), signers)
