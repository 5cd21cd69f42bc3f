"""Checked imports: scan, optionally convert, optionally verify the publisher, then sign.

``import_checked`` is what ``strongroom weights import`` calls when any of
``--publisher-key`` or ``--convert`` is given (and the lead's
``Vault.import_weights`` calls :func:`~strongroom.scanning.scan.scan_import`
on every import regardless)::

    manifest = import_checked(vault, Path("model_dir"), "llama",
                              publisher_key=Path("pub.pem"), convert=True)

In order: the publisher's model-signing signature is verified over the files
as given (refusing any extra, missing or changed file); every file is scanned;
with ``convert`` each pickle state dict is converted to safetensors in a
private temporary directory (only derived tensors, never the pickle, go on);
the result is imported encrypted; and the vault signs the new version in the
OpenSSF model-signing format, kept at ``<home>/signatures/<name>@<version>.sig``
so that ``model_signing verify key`` accepts a plaintext export
(:func:`write_model_signature`).

What not to do: do not import a directory that changes while this runs; the
publisher check and the import each read the files, and the vault's manifest
records what was imported, so compare it with the publisher's digests
(this function does) rather than trusting the first read.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import IntegrityError, InvalidInput, StrongroomError
from strongroom.scanning.scan import scan_import
from strongroom.supplychain.signing import (
    compare_digests,
    load_public_key,
    manifest_digests,
    public_key_pem,
    read_bundle,
    sign_digests,
    vault_signing_key,
    verify_directory,
)

if TYPE_CHECKING:
    from strongroom.vault.manifest import Manifest
    from strongroom.vault.vault import Vault

__all__ = ["import_checked", "sign_version", "signature_path", "write_model_signature"]


def signature_path(vault: Vault, ref: str) -> Path:
    """Where the vault keeps the model-signing bundle of ``name@version``."""
    return vault.settings.resolved_home / "signatures" / f"{ref}.sig"


def sign_version(vault: Vault, manifest: Manifest) -> Path:
    """Sign ``manifest``'s plaintext files in the model-signing format and keep the bundle."""
    bundle = sign_digests(manifest.name, manifest_digests(manifest), vault_signing_key(vault.keys))
    path = signature_path(vault, manifest.ref)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(bundle, encoding="utf-8")
    return path


def write_model_signature(
    vault: Vault, name: str, signature: Path, public_key: Path, *, version: int | None = None
) -> None:
    """Write a fresh model-signing bundle and the vault's P-256 public key (PEM) for an export."""
    manifest = vault.manifest(name, version)
    key = vault_signing_key(vault.keys)
    signature.write_text(sign_digests(manifest.name, manifest_digests(manifest), key))
    public_key.write_bytes(public_key_pem(key.public_key()))


def import_checked(
    vault: Vault,
    path: Path,
    name: str,
    *,
    publisher_key: Path | None = None,
    signature: Path | None = None,
    convert: bool = False,
    **kwargs: Any,
) -> Manifest:
    """Verify the publisher, scan, convert pickles if asked, import, and sign the new version."""
    signed: dict[str, str] | None = None
    try:
        if publisher_key is not None:
            sig = signature or (path / "model.sig" if path.is_dir()
                                else path.with_name("model.sig"))
            key = load_public_key(publisher_key.read_bytes(), obj=str(publisher_key))
            inside = path.is_dir() and sig.resolve().is_relative_to(path.resolve())
            signed = verify_directory(path, read_bundle(sig), key,
                                      signature_path=sig if inside else None)
            vault.record("weights.publisher-verify", name, "ok", source=str(path),
                         files=len(signed))
        report = scan_import(path)
        if report.pickle_files and not convert:
            raise InvalidInput(
                f"{len(report.pickle_files)} pickle-based file(s) passed the scan but are "
                f"not imported as pickles: {', '.join(f.path for f in report.pickle_files)}",
                obj=str(path), remedy="pass --convert to import them as safetensors",
            )
    except StrongroomError as exc:
        # A refused import (bad signature, poisoned file) is a security event: audit it.
        vault.record("weights.import", name, "deny", reason=exc.message[:500],
                     source=path.name, error=type(exc).__name__)
        raise
    source = path
    staging: Path | None = None
    try:
        if report.pickle_files:
            staging, source = _converted(path, [f.path for f in report.pickle_files])
        manifest = vault.import_weights(source, name, **kwargs)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if signed is not None and staging is None:
        imported = manifest_digests(manifest)
        sig_name = (signature or path / "model.sig").name
        try:
            compare_digests({k: v for k, v in signed.items()},
                            {k: v for k, v in imported.items() if k != sig_name},
                            obj=str(path))
        except IntegrityError as exc:
            vault.record("weights.publisher-verify", manifest.ref, "deny", reason=exc.message)
            raise
    sign_version(vault, manifest)
    return manifest


def _converted(path: Path, pickles: Sequence[str]) -> tuple[Path, Path]:
    """A private copy of ``path`` with each pickle replaced by its safetensors conversion."""
    from strongroom.supplychain.convert import convert_to_safetensors

    staging = Path(tempfile.mkdtemp(prefix="strongroom-convert-"))
    try:
        out = staging / (path.name if path.is_dir() else path.stem)
        if path.is_dir():
            shutil.copytree(path, out, symlinks=True)
        else:
            out.mkdir()
            shutil.copy2(path, out / path.name)
        for rel in pickles:
            src = out / rel
            dest = src.with_suffix(".safetensors")
            convert_to_safetensors(src, dest)
            src.unlink()
        return staging, out
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
