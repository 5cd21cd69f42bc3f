"""Airgap transfer bundles: weights cross the gap as ciphertext, signed, proven and approved.

One module, over 600 lines, because it implements one bundle format end to end:
export, verification, quarantine and admission share its layout and checks, and
the rule that nothing is read before ``bundle.dsse`` verified is reviewed here whole.

A bundle is a directory for removable media::

    bundle.dsse              signed bundle manifest (sender's Ed25519 identity): bundle id,
                             destination enclave, artifact, source keys, size+SHA-256 of
                             every other file below
    manifest.dsse            the artifact's manifest, signed by the source vault
    model.sig                OpenSSF model-signing bundle over the plaintext files
    approval.proof           audit inclusion proof of the export's approval (source log)
    approvals/NN.dsse        the officers' signed approvals of the export
    blobs/<blob-id>          the encrypted blobs, copied as ciphertext
    keys/<blob-id>.age       each file key, released by the source's gate with purpose
                             ``transfer: <enclave>`` and age-encrypted to the destination
                             enclave's transfer recipient: hybrid ML-KEM-768 + X25519
                             (``age1pq1…``, what ``transfer keygen`` makes) or, for
                             older enclaves, classical X25519 (``age1…``)

Sending side::

    approvals = [sign_approval(officer, TransferRequest("transfer.export", bid, ref, "enclave-b"))]
    export_bundle(vault, "minilm", Path("/media/usb/minilm"), enclave="enclave-b",
                  recipient=recipient, sender=identity, approvals=approvals,
                  approver=OfficerQuorum.from_vault(vault), bundle_id=bid)

Receiving side (the sender's public key is pinned by the operator)::

    q = receive_bundle(vault, Path("/media/usb/minilm"), sender=sender_pub,
                       enclave="enclave-b", identity=transfer_identity)   # -> quarantine
    manifest = admit_bundle(vault, q.bundle_id, sender=sender_pub, enclave="enclave-b",
                            identity=transfer_identity, approvals=[...], approver=quorum)

``receive_bundle`` verifies before trusting anything: the bundle manifest's
signature under the pinned key, the destination enclave, that the directory
holds exactly the listed files with the listed sizes and hashes, the source
vault's manifest signature, the audit inclusion proof of the export's
approval, the model signature, then unwraps each file key with the transfer
identity, authenticates and hashes every plaintext chunk in memory and scans
the files. It refuses a replayed bundle id. The artifact then waits in
``<home>/quarantine/<bundle id>`` until ``admit_bundle`` gets its own quorum
of approvals; admission re-verifies the quarantined copy, re-wraps each file
key under this vault's keyring and signs a new manifest.

What not to do: never read a bundle file before ``bundle.dsse`` verified;
never admit from a quarantine directory without re-verifying it (local disks
are untrusted too); never move file keys except through the release gate.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey, MLDSA65PublicKey

from strongroom.crypto import age
from strongroom.crypto.dsse import sign_statement, verify_statement
from strongroom.crypto.ed25519 import checked
from strongroom.crypto.hybrid_sig import (
    PinnedSigner,
    add_mldsa_signature,
    verify_hybrid_statement,
    verify_pinned,
)
from strongroom.digests import file_inventory, sha256_file
from strongroom.errors import (
    AlreadyExists,
    ApprovalRequired,
    IntegrityError,
    InvalidInput,
    NotFound,
    StrongroomError,
)
from strongroom.keys.identity import Identity, PublicIdentity
from strongroom.keys.officers import Officers
from strongroom.scanning.scan import scan_content
from strongroom.supplychain.signing import (
    compare_digests,
    load_public_key,
    manifest_digests,
    public_key_pem,
    sign_digests,
    vault_signing_key,
    verify_digests,
)
from strongroom.timefmt import utc_stamp
from strongroom.vault.manifest import Manifest, check_file_path

if TYPE_CHECKING:
    from strongroom.vault.vault import Vault

__all__ = [
    "APPROVAL_PAYLOAD_TYPE",
    "BUNDLE_PAYLOAD_TYPE",
    "ApprovalHook",
    "ExportResult",
    "OfficerQuorum",
    "Quarantined",
    "TransferRequest",
    "VerifiedBundle",
    "admit_bundle",
    "export_bundle",
    "receive_bundle",
    "sign_approval",
    "verify_bundle",
]

BUNDLE_PAYLOAD_TYPE = "application/vnd.strongroom.transfer-bundle.v1+json"
APPROVAL_PAYLOAD_TYPE = "application/vnd.strongroom.transfer-approval.v1+json"
BUNDLE_FILE = "bundle.dsse"
_BUNDLE_TYPE = "strongroom.transfer-bundle/v1"
_MAX_STATEMENT = 16 << 20
_ENCLAVE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BUNDLE_ID = re.compile(r"^[0-9a-f]{32}$")
_COPY = 8 << 20
_SCAN_HEAD = 1 << 20


def _refuse(obj: str, why: str) -> IntegrityError:
    return IntegrityError(
        why, obj=obj, remedy="refuse the media; ask the sender for a fresh bundle over a trusted path"
    )


def check_enclave(enclave: str) -> str:
    """Return ``enclave`` if it is a valid enclave id."""
    if not _ENCLAVE.match(enclave):
        raise InvalidInput(f"invalid enclave id {enclave!r}",
                           remedy="use 1-64 letters, digits, '.', '_' or '-'")
    return enclave


# -- approvals -----------------------------------------------------------------


@dataclass(frozen=True)
class TransferRequest:
    """What an approver signs: one action on one bundle of one artifact for one enclave."""

    action: str  # "transfer.export" or "transfer.import"
    bundle_id: str
    artifact: str
    enclave: str

    def to_json(self) -> dict[str, str]:
        """The signed statement."""
        return {"_type": "strongroom.transfer-approval/v1", "action": self.action,
                "bundle_id": self.bundle_id, "artifact": self.artifact, "enclave": self.enclave}


def sign_approval(identity: Identity, request: TransferRequest) -> str:
    """An approver's DSSE envelope over ``request`` (a hybrid identity's: with ML-DSA-65 too)."""
    env = sign_statement(request.to_json(), APPROVAL_PAYLOAD_TYPE, identity.private_key)
    if identity.mldsa_key is not None:
        env = add_mldsa_signature(env, APPROVAL_PAYLOAD_TYPE, identity.mldsa_key)
    return env


class ApprovalHook(Protocol):
    """Decides whether ``approvals`` authorise ``request``; returns the approvers' principals."""

    def check(self, request: TransferRequest, approvals: Sequence[str]) -> list[str]:
        """Raise :class:`ApprovalRequired` unless the approvals suffice."""
        ...


class OfficerQuorum:
    """Interim rule: ``threshold`` distinct officers pinned in the barrier signed the request."""

    def __init__(self, officers: Mapping[str, Ed25519PublicKey], threshold: int, *,
                 mldsa: Mapping[str, MLDSA65PublicKey] | None = None) -> None:
        if not 1 <= threshold <= max(1, len(officers)):
            raise InvalidInput(f"approval threshold {threshold} with {len(officers)} officer(s)",
                               obj="transfer approvals")
        self.officers = dict(officers)
        #: Hybrid officers' ML-DSA-65 keys: their approvals count only with both signatures.
        self.mldsa = dict(mldsa or {})
        self.threshold = threshold

    @classmethod
    def from_vault(cls, vault: Vault, threshold: int = 1) -> OfficerQuorum:
        """The officers pinned in ``vault``'s barrier (and hybrid officers' ML-DSA-65 keys)."""
        pins = Officers.from_public_keys(vault.keys.public_keys())
        return cls(pins.ed25519, threshold, mldsa=pins.mldsa)

    def check(self, request: TransferRequest, approvals: Sequence[str]) -> list[str]:
        """The key ids of the distinct officers whose approval matches ``request``."""
        good: list[str] = []
        for envelope in approvals:
            for kid, key in self.officers.items():
                if kid in good:
                    continue
                try:
                    statement = verify_pinned(envelope, APPROVAL_PAYLOAD_TYPE, {kid: key},
                                              pq=self.mldsa, obj="transfer approval")
                except IntegrityError:
                    continue
                if statement == request.to_json():
                    good.append(kid)
        if len(good) < self.threshold:
            raise ApprovalRequired(
                f"{request.action} of bundle {request.bundle_id} has {len(good)} valid officer "
                f"approval(s), {self.threshold} required",
                obj=request.artifact,
                remedy="collect signed approvals (`strongroom transfer approve-sign`) from officers",
            )
        return [f"ed25519:{kid}" for kid in good]


# -- export --------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """What ``export_bundle`` wrote."""

    bundle_id: str
    path: Path
    artifact: str
    files: int
    audit_index: int


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def export_bundle(
    vault: Vault,
    name: str,
    dest: Path,
    *,
    enclave: str,
    recipient: age.Recipient,
    sender: Identity,
    approvals: Sequence[str],
    approver: ApprovalHook,
    bundle_id: str | None = None,
    version: int | None = None,
    sender_pq: MLDSA65PrivateKey | None = None,
) -> ExportResult:
    """Write a transfer bundle of ``name`` for ``enclave`` into the new directory ``dest``.

    With ``sender_pq`` the bundle manifest also carries the sender's ML-DSA-65
    signature (:mod:`strongroom.crypto.hybrid_sig`), for a receiver that pins both keys.
    """
    check_enclave(enclave)
    bundle_id = bundle_id or secrets.token_hex(16)
    if not _BUNDLE_ID.match(bundle_id):
        raise InvalidInput("bundle id must be 32 lowercase hex characters", obj=bundle_id)
    manifest = vault.manifest(name, version)
    if os.path.lexists(dest):  # a dangling symlink too: the rename would fail late
        raise AlreadyExists("bundle destination exists", obj=str(dest), remedy="name a new directory")
    request = TransferRequest("transfer.export", bundle_id, manifest.ref, enclave)
    try:
        approvers = approver.check(request, approvals)
    except ApprovalRequired as exc:
        vault.record("transfer.export", bundle_id, "deny", reason=exc.message,
                     artifact=manifest.ref, enclave=enclave)
        raise
    index = vault.record("transfer.export", bundle_id, "allow", reason=f"to enclave {enclave}",
                         artifact=manifest.ref, enclave=enclave, approvers=approvers,
                         recipient=str(recipient))
    proof = vault.audit.prove(index).to_text()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir(mode=0o700)
    try:
        for entry in manifest.files:
            _copy_blob(vault, entry.blob, entry.ct_sha256, tmp / "blobs" / entry.blob, manifest.ref)
            key = vault.release_file_key(manifest, entry, f"transfer: {enclave}")
            try:
                _write(tmp / "keys" / f"{entry.blob}.age", age.encrypt(bytes(key), [recipient]))
            finally:
                key[:] = bytes(len(key))
        envelope = manifest.sign((vault.manifest_key, lambda m: vault.keys.sign("manifest", m)))
        _write(tmp / "manifest.dsse", envelope.encode())
        signing_key = vault_signing_key(vault.keys)
        _write(tmp / "model.sig",
               sign_digests(manifest.name, manifest_digests(manifest), signing_key).encode())
        _write(tmp / "approval.proof", proof.encode())
        for i, approval in enumerate(approvals):
            _write(tmp / "approvals" / f"{i:02d}.dsse", approval.encode())
        files = file_inventory(tmp)
        statement = {
            "_type": _BUNDLE_TYPE,
            "bundle_id": bundle_id,
            "created": utc_stamp(),
            "destination": enclave,
            "recipient": str(recipient),
            "artifact": manifest.ref,
            "audit_index": index,
            "source": {
                "manifest_key": base64.b64encode(vault.keys.public_keys()["manifest"]).decode(),
                "log_key": vault.audit.signer.vkey,
                "model_signing_key": public_key_pem(signing_key.public_key()).decode(),
                "sender": str(sender.public),
            },
            "files": files,
        }
        signed = sign_statement(statement, BUNDLE_PAYLOAD_TYPE, sender.private_key)
        if sender_pq is not None:
            signed = add_mldsa_signature(signed, BUNDLE_PAYLOAD_TYPE, sender_pq)
        _write(tmp / BUNDLE_FILE, signed.encode())
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(bundle_id, dest, manifest.ref, len(manifest.files), index)


def _copy_blob(vault: Vault, blob_id: str, want: str, target: Path, ref: str) -> None:
    source = vault.blobs.open(blob_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with open(target, "xb") as out:
            total = len(source)
            for off in range(0, total, _COPY):
                chunk = source.read_at(off, min(_COPY, total - off))
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()
    if digest.hexdigest() != want:
        raise IntegrityError("blob ciphertext does not match the manifest", obj=f"{ref} blob {blob_id}")


# -- verification ------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose every signature and hash checked out (nothing decrypted yet)."""

    root: Path
    bundle_id: str
    statement: Mapping[str, Any]
    manifest: Manifest
    sender: str


def _read_statement(root: Path) -> str:
    path = root / BUNDLE_FILE
    if path.is_symlink() or not path.is_file():
        raise _refuse(str(path), "the bundle has no signed bundle manifest (bundle.dsse missing)")
    if path.stat().st_size > _MAX_STATEMENT:
        raise _refuse(str(path), "the signed bundle manifest is implausibly large")
    return path.read_text(encoding="utf-8", errors="replace")


def _listed_files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for fname in filenames:
            full = Path(dirpath) / fname
            rel = full.relative_to(root).as_posix()
            if full.is_symlink() or not full.is_file():
                raise _refuse(str(full), "the bundle holds a symlink or special file")
            if rel != BUNDLE_FILE:
                found[rel] = full
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise _refuse(str(Path(dirpath) / d), "the bundle holds a symlinked directory")
    return found


def verify_bundle(root: Path, *, sender: PublicIdentity, enclave: str,
                  sender_pq: MLDSA65PublicKey | None = None) -> VerifiedBundle:
    """Check every signature and hash of the bundle at ``root``; decrypts nothing.

    With ``sender_pq`` pinned, the bundle manifest must carry both the sender's
    Ed25519 and ML-DSA-65 signatures.
    """
    obj = str(root)
    if root.is_symlink() or not root.is_dir():
        raise NotFound("no bundle directory here", obj=obj)
    text = _read_statement(root)
    if sender_pq is None:
        st = verify_statement(text, BUNDLE_PAYLOAD_TYPE, {sender.key_id: sender.public_key},
                              obj=f"{obj}/{BUNDLE_FILE}")
    else:
        st = verify_hybrid_statement(text, BUNDLE_PAYLOAD_TYPE,
                                     [PinnedSigner(sender.public_key, sender_pq)],
                                     obj=f"{obj}/{BUNDLE_FILE}")
    try:
        if st["_type"] != _BUNDLE_TYPE or not _BUNDLE_ID.match(st["bundle_id"]):
            raise ValueError("type or bundle id")
        listed: dict[str, dict[str, Any]] = dict(st["files"])
        source = dict(st["source"])
        destination, artifact = str(st["destination"]), str(st["artifact"])
        for rel in listed:
            check_file_path(rel)
    except (KeyError, TypeError, ValueError, InvalidInput) as exc:
        raise _refuse(obj, f"the signed bundle manifest has an unexpected shape ({exc})") from None
    if destination != enclave:
        raise _refuse(obj, f"the bundle is addressed to enclave {destination!r}, this is {enclave!r}")
    present = _listed_files(root)
    extra = sorted(set(present) - set(listed))
    missing = sorted(set(listed) - set(present))
    if extra:
        raise _refuse(obj, f"the bundle holds files its signed manifest does not list: {', '.join(extra)}")
    if missing:
        raise _refuse(obj, f"files listed in the signed manifest are missing: {', '.join(missing)}")
    for rel, info in sorted(listed.items()):
        size, digest = sha256_file(present[rel])
        if size < int(info["size"]):
            raise _refuse(f"{obj}/{rel}", f"file is truncated ({size} of {info['size']} bytes)")
        if size != int(info["size"]):
            raise _refuse(f"{obj}/{rel}", f"file is {size} bytes, the signed manifest says {info['size']}")
        if digest != info["sha256"]:
            raise _refuse(f"{obj}/{rel}", "file content differs from the signed manifest (tampered)")
    manifest_key = checked(Ed25519PublicKey.from_public_bytes(
        base64.b64decode(source["manifest_key"])), obj=f"{obj}: manifest key")
    manifest = Manifest.verify((root / "manifest.dsse").read_text(encoding="utf-8"), manifest_key,
                               obj=f"{obj}/manifest.dsse")
    if manifest.ref != artifact:
        raise _refuse(obj, f"the manifest is for {manifest.ref}, the bundle names {artifact}")
    for entry in manifest.files:
        blob_info = listed.get(f"blobs/{entry.blob}")
        if blob_info is None or f"keys/{entry.blob}.age" not in listed:
            raise _refuse(obj, f"the bundle lacks the blob or key of {entry.path}")
        if int(blob_info["size"]) != entry.ct_size or blob_info["sha256"] != entry.ct_sha256:
            raise _refuse(obj, f"the blob of {entry.path} does not match the signed manifest")
    _verify_proof(root, st, str(source["log_key"]))
    signing_key = load_public_key(str(source["model_signing_key"]).encode(), obj="model signing key")
    signed = verify_digests((root / "model.sig").read_text(encoding="utf-8"), signing_key,
                            obj=f"{obj}/model.sig")
    compare_digests(signed, manifest_digests(manifest), obj=f"{obj}/model.sig")
    return VerifiedBundle(root, str(st["bundle_id"]), st, manifest, sender.principal)


def _verify_proof(root: Path, st: Mapping[str, Any], log_key: str) -> None:
    from strongroom.audit.log import InclusionProof

    obj = f"{root}/approval.proof"
    proof = InclusionProof.parse((root / "approval.proof").read_text(encoding="utf-8"))
    event = proof.verify(log_key)
    if (
        event.action != "transfer.export" or event.decision != "allow"
        or event.object != st["bundle_id"] or event.index != st["audit_index"]
        or event.details.get("artifact") != st["artifact"]
        or event.details.get("enclave") != st["destination"]
    ):  # fmt: skip
        raise _refuse(obj, "the audit proof does not record an approved export of this bundle")


# -- receive (quarantine) and admit -------------------------------------------------------


@dataclass(frozen=True)
class Quarantined:
    """A bundle verified, decrypted in memory, scanned, and held in quarantine."""

    bundle_id: str
    artifact: str
    path: Path
    files: int
    nbytes: int


def _quarantine_dir(vault: Vault) -> Path:
    return vault.settings.resolved_home / "quarantine"


def _seen(vault: Vault, bundle_id: str, action: str, decisions: tuple[str, ...]) -> bool:
    # The audit log is the tamper-evident record of what crossed the gap.
    return any(
        e.action == action and e.object == bundle_id and e.decision in decisions
        for e in vault.audit.events()
    )


def _file_key(root: Path, blob: str, identity: age.AgeIdentity) -> bytearray:
    try:
        key = age.decrypt((root / "keys" / f"{blob}.age").read_bytes(), [identity])
    except StrongroomError as exc:
        raise _refuse(f"{root}/keys/{blob}.age",
                      f"the file key cannot be opened with this enclave's transfer identity ({exc.message})") from None
    if len(key) != age.FILE_KEY_SIZE:
        raise _refuse(f"{root}/keys/{blob}.age", "the wrapped file key has the wrong length")
    return bytearray(key)


def _check_plaintext(bundle: VerifiedBundle, identity: age.AgeIdentity) -> int:
    """Decrypt every chunk in memory, match the manifest's SHA-256, scan each file."""
    total = 0
    for entry in bundle.manifest.files:
        obj = f"{bundle.root}/{entry.path}"
        key = _file_key(bundle.root, entry.blob, identity)
        data = (bundle.root / "blobs" / entry.blob).read_bytes()
        try:
            reader = age.AgeReader.with_file_key(data, bytes(key), plaintext_size=entry.size)
            digest = hashlib.sha256()
            kept = bytearray()
            keep_all = entry.kind != "safetensors"
            for i in range(reader.num_chunks):
                chunk = reader.decrypt_chunk(i)
                digest.update(chunk)
                if keep_all or len(kept) < _SCAN_HEAD:
                    kept += chunk
        except IntegrityError as exc:
            raise _refuse(obj, f"ciphertext does not authenticate ({exc.message})") from None
        finally:
            key[:] = bytes(len(key))
        if digest.hexdigest() != entry.sha256:
            raise _refuse(obj, "plaintext SHA-256 does not match the signed manifest")
        if entry.kind == "safetensors":
            _scan_safetensors(entry.path, bytes(kept), entry.size, bundle.root, reader)
        else:
            scan_content(entry.path, bytes(kept))
        kept[:] = bytes(len(kept))
        total += entry.size
    return total


def _scan_safetensors(name: str, head: bytes, size: int, root: Path, reader: age.AgeReader) -> None:
    import struct

    if len(head) >= 8:
        (n,) = struct.unpack("<Q", head[:8])
        if len(head) < 8 + n <= size:
            head = reader.read(0, 8 + n)
    scan_content(name, head, size=size)


def receive_bundle(
    vault: Vault, root: Path, *, sender: PublicIdentity, enclave: str, identity: age.AgeIdentity,
    sender_pq: MLDSA65PublicKey | None = None,
) -> Quarantined:
    """Verify, decrypt in memory, scan, and hold a bundle in quarantine (audited)."""
    try:
        bundle = verify_bundle(root, sender=sender, enclave=enclave, sender_pq=sender_pq)
    except StrongroomError as exc:
        with contextlib.suppress(StrongroomError):
            vault.record("transfer.receive", str(root), "deny", reason=exc.message)
        raise
    qdir = _quarantine_dir(vault) / bundle.bundle_id
    if qdir.exists() or _seen(vault, bundle.bundle_id, "transfer.receive", ("quarantine",)):
        vault.record("transfer.receive", bundle.bundle_id, "deny", reason="replayed bundle")
        raise _refuse(str(root), f"bundle {bundle.bundle_id} was already received (replay)")
    try:
        nbytes = _check_plaintext(bundle, identity)
    except StrongroomError as exc:
        with contextlib.suppress(StrongroomError):
            vault.record("transfer.receive", bundle.bundle_id, "deny", reason=exc.message)
        raise
    qdir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = qdir.parent / f".{bundle.bundle_id}.partial-{secrets.token_hex(4)}"
    try:
        shutil.copytree(root, tmp, symlinks=True)
        vault.record("transfer.receive", bundle.bundle_id, "quarantine",
                     reason=f"from {bundle.sender}", artifact=bundle.manifest.ref,
                     enclave=enclave, nbytes=nbytes)
        os.rename(tmp, qdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Quarantined(bundle.bundle_id, bundle.manifest.ref, qdir, len(bundle.manifest.files), nbytes)


def admit_bundle(
    vault: Vault,
    bundle_id: str,
    *,
    sender: PublicIdentity,
    enclave: str,
    identity: age.AgeIdentity,
    approvals: Sequence[str],
    approver: ApprovalHook,
    name: str | None = None,
    sender_pq: MLDSA65PublicKey | None = None,
) -> Manifest:
    """Release a quarantined bundle into the vault after its own quorum approval."""
    if not _BUNDLE_ID.match(bundle_id):
        raise InvalidInput("bundle id must be 32 lowercase hex characters", obj=bundle_id)
    qdir = _quarantine_dir(vault) / bundle_id
    if not qdir.is_dir():
        raise NotFound("no such bundle in quarantine", obj=bundle_id,
                       remedy="receive it first with `strongroom transfer import DIR`")
    bundle = verify_bundle(qdir, sender=sender, enclave=enclave, sender_pq=sender_pq)
    if bundle.bundle_id != bundle_id:
        raise _refuse(str(qdir), f"the quarantined bundle is {bundle.bundle_id}, not {bundle_id}")
    if _seen(vault, bundle_id, "transfer.import", ("allow",)):
        raise _refuse(bundle_id, "this bundle was already admitted (replay)")
    source = bundle.manifest
    request = TransferRequest("transfer.import", bundle_id, source.ref, enclave)
    try:
        approvers = approver.check(request, approvals)
    except ApprovalRequired as exc:
        vault.record("transfer.import", bundle_id, "deny", reason=exc.message, artifact=source.ref)
        raise
    _check_plaintext(bundle, identity)
    target = name or source.name
    version = vault.next_version(target, new_version=True)
    written: list[str] = []
    try:
        for entry in source.files:
            if vault.blobs.exists(entry.blob):
                raise AlreadyExists("a blob with this id already exists in the vault",
                                    obj=f"blob {entry.blob}")
            key = _file_key(qdir, entry.blob, identity)
            try:
                with vault.blobs.writer(entry.blob) as writer:
                    written.append(entry.blob)
                    with open(qdir / "blobs" / entry.blob, "rb") as fh:
                        while chunk := fh.read(_COPY):
                            writer.write(chunk)
                    writer.commit()
                vault.keys.wrap_file_key(entry.blob, bytes(key))
            finally:
                key[:] = bytes(len(key))
        manifest = Manifest(
            name=target, version=version, kind=source.kind,
            created=utc_stamp(),
            compartments=source.compartments, files=source.files,
            tensors=source.tensors, metadata=source.metadata,
        )  # fmt: skip
        envelope = manifest.sign((vault.manifest_key, lambda m: vault.keys.sign("manifest", m)))
        vault.record("transfer.import", bundle_id, "allow", reason=f"from {bundle.sender}",
                     artifact=manifest.ref, source_artifact=source.ref, approvers=approvers)
        vault.record_artifact(manifest, envelope)
    except BaseException:
        for blob in written:
            with contextlib.suppress(StrongroomError, OSError):
                vault.blobs.delete(blob)
        raise
    shutil.rmtree(qdir, ignore_errors=True)
    return manifest
