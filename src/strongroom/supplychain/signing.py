"""Model signatures in the OpenSSF model-signing format (key mode, ECDSA P-256).

A signature is a Sigstore bundle v0.3 (``application/vnd.dev.sigstore.bundle.v0.3+json``)
holding a DSSE envelope (``application/vnd.in-toto+json``) over an in-toto
Statement v1 whose predicate (``https://model_signing/signature/v1.0``) lists
every file's SHA-256, sorted by path; the subject digest is SHA-256 over those
digests in order. ``model_signing verify key --public_key K --signature S DIR``
accepts what :func:`sign_digests` writes, and :func:`verify_directory` accepts
what ``model_signing sign key`` writes, both with default options.

Git files are treated as model_signing treats them by default
(``ignore_git_paths``): :data:`GIT_PATHS` at the top of the model directory,
and everything under them, are left out of the signed resources and listed in
the statement's ``serialization.ignore_paths``. A signature that does list a
git file (``--no-ignore-git-paths``) still has it checked.

Use it like this::

    digests = hash_directory(model_dir)                       # {"model.safetensors": "ab12…"}
    bundle = sign_digests("minilm", digests, private_key)     # JSON text
    verify_directory(model_dir, bundle, public_key)           # IntegrityError on any difference
    write_export_signature(manifest, vault.keys, export_dir)  # model.sig + model.pub.pem

The vault's own model-signing key (:func:`vault_signing_key`) is derived from
the barrier's manifest key: HKDF over the manifest key's (deterministic)
Ed25519 signature of a fixed, domain-separated label. It is never stored; it
exists only while the vault is unsealed, like the manifest key itself.

What not to do: do not accept a signature whose ``verificationMaterial`` hint
names another key, and do not verify a directory against digests you computed
from the same untrusted copy the signature came with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.crypto.dsse import pae
from strongroom.digests import sha256_file
from strongroom.errors import AlreadyExists, IntegrityError, InvalidInput, NotFound

if TYPE_CHECKING:
    from strongroom.keys.protocol import KeyService
    from strongroom.vault.manifest import Manifest

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "EXPORT_PUBLIC_KEY",
    "EXPORT_SIGNATURE",
    "GIT_PATHS",
    "INTOTO_PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "compare_digests",
    "hash_directory",
    "is_ignored",
    "key_hint",
    "load_public_key",
    "manifest_digests",
    "public_key_pem",
    "read_bundle",
    "sign_digests",
    "vault_signing_key",
    "verify_digests",
    "verify_directory",
    "write_export_signature",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
#: Signed over by the manifest key to derive the vault's P-256 model-signing key.
_KEY_LABEL = b"strongroom model-signing key derivation v1\n"
_MAX_BUNDLE = 64 << 20
_HASH_CHUNK = 8 << 20
#: What ``model_signing`` leaves out by default (``hashing.Config``'s
#: ``ignore_git_paths=True``): these top-level names and everything under them.
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
#: What ``strongroom weights export`` writes beside the plaintext files.
EXPORT_SIGNATURE = "model.sig"
EXPORT_PUBLIC_KEY = "model.pub.pem"


def _bad(obj: str, why: str) -> IntegrityError:
    return IntegrityError(
        why, obj=obj, remedy="the model differs from what its publisher signed; do not use it"
    )


def _sha256_file(path: Path) -> str:
    return sha256_file(path)[1]


def is_ignored(name: str, ignore: Iterable[str]) -> bool:
    """Whether relative POSIX path ``name`` is one of ``ignore`` or lies under one.

    model_signing's rule (``Path.is_relative_to`` against each ignored path,
    relative to the model directory): ``.git`` covers ``.git/config``, not
    ``sub/.git`` nor ``.gitfoo``.
    """
    parts = PurePosixPath(name).parts
    for p in ignore:
        q = PurePosixPath(p).parts
        if q and parts[: len(q)] == q:
            return True
    return False


def hash_directory(
    root: Path, *, ignore: Sequence[Path] = (), threads: int | None = None
) -> dict[str, str]:
    """SHA-256 of every regular file under ``root`` (relative POSIX path -> hex), in threads."""
    skip = {p.resolve() for p in ignore}
    files: list[tuple[str, Path]] = []
    if root.is_file():
        files = [(root.name, root)]
    else:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fname in filenames:
                full = Path(dirpath) / fname
                if full.resolve() in skip or any(p.resolve() in skip for p in full.parents):
                    continue
                if full.is_symlink() or not full.is_file():
                    raise InvalidInput("not a regular file (symlink or special file)", obj=str(full))
                files.append((full.relative_to(root).as_posix(), full))
    workers = threads or min(8, os.cpu_count() or 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # sha256 releases the GIL
        digests = list(pool.map(_sha256_file, [p for _, p in files]))
    return dict(sorted(zip([n for n, _ in files], digests, strict=True)))


def manifest_digests(manifest: Manifest) -> dict[str, str]:
    """Per-file plaintext SHA-256 from a verified vault manifest."""
    return {f.path: f.sha256 for f in sorted(manifest.files, key=lambda f: f.path)}


def _statement(
    model_name: str, digests: Mapping[str, str], ignore: Sequence[str]
) -> dict[str, Any]:
    root = hashlib.sha256()
    resources = []
    for name in sorted(n for n in digests if not is_ignored(n, ignore)):
        root.update(bytes.fromhex(digests[name]))
        resources.append({"name": name, "algorithm": "sha256", "digest": digests[name]})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "resources": resources,
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": list(ignore),
            },
        },
    }


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM, as ``model_signing --public_key`` reads it."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_hint(key: ec.EllipticCurvePublicKey) -> str:
    """The bundle's public key hint: hex SHA-256 of the PEM."""
    return hashlib.sha256(public_key_pem(key)).hexdigest()


def load_public_key(pem: bytes, *, obj: str = "public key") -> ec.EllipticCurvePublicKey:
    """Parse a PEM EC P-256 public key (what publishers hand out)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise InvalidInput("not a PEM public key", obj=obj) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInput("model signatures use ECDSA P-256 keys", obj=obj,
                           remedy="ask the publisher for their P-256 public key (PEM)")
    return key


def sign_digests(
    model_name: str,
    digests: Mapping[str, str],
    key: ec.EllipticCurvePrivateKey,
    *,
    ignore_paths: Sequence[str] = (),
) -> str:
    """A model-signing bundle (JSON text) over ``digests``, signed with ``key``.

    Files under :data:`GIT_PATHS` and ``ignore_paths`` (relative to the model
    directory, e.g. the signature's own name when it is written inside it) are
    left out and recorded in the statement, as ``model_signing sign key`` does.
    """
    ignore = sorted({*GIT_PATHS, *ignore_paths})
    payload = json.dumps(_statement(model_name, digests, ignore), indent=2).encode()
    signature = key.sign(pae(INTOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key_hint(key.public_key())},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": INTOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle, indent=2) + "\n"


def verify_digests(
    bundle: str | bytes, key: ec.EllipticCurvePublicKey, *, obj: str = "model signature"
) -> dict[str, str]:
    """Check the bundle's signature under ``key``; return the signed per-file digests."""
    return _open_bundle(bundle, key, obj)[0]


def _open_bundle(
    bundle: str | bytes, key: ec.EllipticCurvePublicKey, obj: str
) -> tuple[dict[str, str], list[str]]:
    try:
        data = json.loads(bundle)
        if data.get("mediaType") != BUNDLE_MEDIA_TYPE:
            raise ValueError(f"media type {data.get('mediaType')!r}")
        hint = data["verificationMaterial"]["publicKey"].get("hint", "")
        env = data["dsseEnvelope"]
        if env["payloadType"] != INTOTO_PAYLOAD_TYPE:
            raise ValueError("payload type")
        payload = base64.b64decode(env["payload"], validate=True)
        sig = base64.b64decode(env["signatures"][0]["sig"], validate=True)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise _bad(obj, f"not a model-signing bundle ({exc})") from None
    if hint and hint != key_hint(key):
        raise _bad(obj, "the signature names another public key")
    try:
        key.verify(sig, pae(INTOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _bad(obj, "the signature does not verify under the publisher's key") from None
    try:
        statement = json.loads(payload)
        if statement["_type"] != STATEMENT_TYPE or statement["predicateType"] != PREDICATE_TYPE:
            raise ValueError("statement or predicate type")
        resources = statement["predicate"]["resources"]
        digests = {}
        root = hashlib.sha256()
        for r in resources:
            if r["algorithm"] != "sha256" or r["name"] in digests:
                raise ValueError(f"resource {r['name']!r}")
            digests[str(r["name"])] = str(r["digest"])
            root.update(bytes.fromhex(r["digest"]))
        if statement["subject"][0]["digest"]["sha256"] != root.hexdigest():
            raise ValueError("subject digest does not match the resources")
        ignore = [str(p) for p in statement["predicate"]["serialization"].get("ignore_paths", [])]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise _bad(obj, f"signed statement is malformed ({exc})") from None
    return digests, ignore


def compare_digests(signed: Mapping[str, str], actual: Mapping[str, str], *, obj: str) -> None:
    """Refuse unless ``actual`` has exactly the signed files with the signed digests.

    A git file (:data:`GIT_PATHS`) that the signature does not list is not
    compared, as model_signing ignores it by default; one it lists is.
    """
    actual = {n: d for n, d in actual.items() if n in signed or not is_ignored(n, GIT_PATHS)}
    extra = sorted(set(actual) - set(signed))
    missing = sorted(set(signed) - set(actual))
    changed = sorted(n for n in set(signed) & set(actual) if signed[n] != actual[n])
    if extra or missing or changed:
        parts = []
        if changed:
            parts.append(f"changed: {', '.join(changed)}")
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if extra:
            parts.append(f"not signed: {', '.join(extra)}")
        raise _bad(obj, "files differ from the signature (" + "; ".join(parts) + ")")


def verify_directory(
    root: Path, bundle: str | bytes, key: ec.EllipticCurvePublicKey, *, signature_path: Path | None = None
) -> dict[str, str]:
    """Verify a publisher's signature over the files under ``root``; returns the digests."""
    signed, ignored = _open_bundle(bundle, key, str(signature_path or root))
    # Git paths are not read unless the signature lists a file under them.
    unsigned_git = [g for g in GIT_PATHS if not any(is_ignored(n, [g]) for n in signed)]
    skip = [root / p for p in [*ignored, *unsigned_git] if ".." not in Path(p).parts]
    actual = hash_directory(root, ignore=[*skip, *([signature_path] if signature_path else [])])
    compare_digests(signed, actual, obj=str(root))
    return actual


def read_bundle(path: Path) -> str:
    """Read a signature file (bounded size)."""
    try:
        if path.stat().st_size > _MAX_BUNDLE:
            raise InvalidInput("signature file is implausibly large", obj=str(path))
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound("signature file not found", obj=str(path),
                       remedy="pass --signature, or put model.sig in the model directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read signature ({type(exc).__name__})", obj=str(path)) from exc


def vault_signing_key(keys: KeyService) -> ec.EllipticCurvePrivateKey:
    """The vault's P-256 model-signing key, derived from the barrier's manifest key."""
    seed = keys.sign("manifest", _KEY_LABEL + keys.public_keys()["manifest"])
    okm = HKDF(hashes.SHA256(), 48, salt=None, info=b"strongroom model-signing P-256").derive(seed)
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    return ec.derive_private_key(int.from_bytes(okm, "big") % (order - 1) + 1, ec.SECP256R1())


def write_export_signature(manifest: Manifest, keys: KeyService, dest: Path) -> tuple[Path, Path]:
    """Sign an export of ``manifest`` at ``dest``; returns (signature, public key) paths.

    Writes :data:`EXPORT_SIGNATURE` (the bundle, over the manifest's verified
    digests) and :data:`EXPORT_PUBLIC_KEY` (the vault's P-256 key, PEM) inside
    ``dest``, both recorded in the statement's ``ignore_paths`` so that
    ``model_signing verify key --public_key dest/model.pub.pem --signature
    dest/model.sig dest`` accepts it with default options. When the artifact
    itself holds a top-level file of either name (a publisher's ``model.sig``),
    they go beside ``dest`` instead, as ``<dest>.model.sig`` and
    ``<dest>.model.pub.pem``. Never overwrites a file.
    """
    names = (EXPORT_SIGNATURE, EXPORT_PUBLIC_KEY)
    if any(is_ignored(f.path, names) for f in manifest.files):
        sig, pub = (dest.parent / f"{dest.name}.{n}" for n in names)
        ignore: Sequence[str] = ()
    else:
        sig, pub = (dest / n for n in names)
        ignore = names
    key = vault_signing_key(keys)
    bundle = sign_digests(manifest.name, manifest_digests(manifest), key, ignore_paths=ignore)
    for path, data in ((sig, bundle.encode()), (pub, public_key_pem(key.public_key()))):
        try:
            with open(path, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            raise AlreadyExists("will not overwrite an existing file", obj=str(path),
                                remedy="move it away, then export again to a new directory") from None
    return sig, pub
