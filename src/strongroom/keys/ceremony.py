"""Key ceremonies: ``init`` deals the root key to custodians; shares come back to unseal.

``init_vault`` generates the 32-byte root key, splits it k-of-n with Shamir over
GF(256), encrypts each share to its custodian's age X25519 recipient, writes one
share file per custodian and a public commitments file, and commits the
keyring (barrier, officers, signing keys, KEK v1) in one transaction. The root
key is never stored; it is zeroed before ``init_vault`` returns.

A **share file** (``share-<vault>-g<generation>-<index>.age``) is a standard
age file: ``age -d -i custodian.key share-....age`` prints its JSON
(``format``, ``vault_id``, ``generation``, ``index``, ``threshold``, ``shares``,
``share`` in base64, ``commitment``). To unseal, the CLI decrypts the file
locally with the custodian's identity and re-encrypts ``{nonce, vault_id,
generation, index, share}`` to the *current ceremony's* ephemeral recipient
(``build_submission``), so a submission is useless to anyone else and cannot
be replayed into a later ceremony.

Crash safety: share files are written to temporary names, fsynced and renamed
*before* the keyring commits. A kill before the commit leaves an uninitialised
vault (run ``init`` again; stale share files carry the old vault id); a kill
after it leaves a complete one.

What not to do: never write a share anywhere unencrypted, never send a share
file's plaintext over the network, and never give one custodian two shares.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from strongroom.crypto import age, shamir
from strongroom.errors import (
    AlreadyExists,
    HeaderError,
    HmacError,
    IntegrityError,
    InvalidInput,
    NoIdentityMatched,
    NotFound,
    PayloadError,
)
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity, PublicIdentity
from strongroom.keys.keyring import (
    ROOT_KEY_LEN,
    CeremonyConfig,
    Keyring,
    KeyringStatus,
)
from strongroom.store.db import Store
from strongroom.store.tables.keys import KeyringState

__all__ = [
    "SHARE_FORMAT",
    "InitResult",
    "ShareContent",
    "build_submission",
    "commitments_file_name",
    "commitments_json",
    "encrypt_share_files",
    "init_vault",
    "published_config",
    "published_in_store",
    "read_custodian",
    "read_share_file",
    "share_file_name",
    "verify_share_file",
    "write_share_files",
]

SHARE_FORMAT = "strongroom-share-v1"
BOOTSTRAP_OFFICER = "officer.identity"


@dataclass(frozen=True)
class ShareContent:
    """A decrypted share file (secret: never log ``share``)."""

    vault_id: str
    generation: int
    index: int
    threshold: int
    shares: int
    share: shamir.Share
    commitment: str


@dataclass(frozen=True)
class InitResult:
    """What ``init`` produced (no secrets)."""

    vault_id: str
    backend: str
    threshold: int
    share_files: tuple[Path, ...]
    commitments_file: Path | None
    officer_identity: Path | None
    officers: tuple[str, ...]


def share_file_name(vault_id: str, generation: int, index: int) -> str:
    """The file name of custodian ``index``'s share."""
    return f"share-{vault_id}-g{generation}-{index:03d}.age"


def read_custodian(path: Path) -> str:
    """The recipient in a custodian's public key file: ``age1pq1...`` (hybrid) or ``age1...``.

    Hybrid post-quantum keys (``strongroom keygen --pq``) are preferred: a share
    file leaves the vault host, and a recorded one must stay closed for years.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound("custodian public key file not found", obj=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read custodian key ({type(exc).__name__})",
                           obj=str(path)) from exc
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("age1"):
            return str(age.parse_recipient(line))
        if "public key:" in line and "age1" in line:
            return str(age.parse_recipient(line[line.index("age1"):].split()[0]))
    raise InvalidInput("no age1pq1... or age1... recipient line", obj=str(path),
                       remedy="give the custodian's public key (`strongroom keygen --pq` prints "
                              "a hybrid one; age-keygen -y KEY a classical one)")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encrypt_share_files(
    config: CeremonyConfig, shares: Sequence[shamir.Share]
) -> list[tuple[str, bytes]]:
    """Each share as (file name, age file to its custodian), then the public commitments file."""
    out: list[tuple[str, bytes]] = []
    for share, recipient, commitment in zip(shares, config.custodians, config.commitments,
                                            strict=True):
        body = json.dumps({
            "format": SHARE_FORMAT, "vault_id": config.vault_id,
            "generation": config.generation, "index": share.x,
            "threshold": config.threshold, "shares": len(config.custodians),
            "share": base64.b64encode(share.to_bytes()).decode(), "commitment": commitment,
        }, sort_keys=True).encode()
        data = age.encrypt(body, [age.parse_recipient(recipient)])
        out.append((share_file_name(config.vault_id, config.generation, share.x), data))
    out.append((commitments_file_name(config), commitments_json(config).encode()))
    return out


def commitments_file_name(config: CeremonyConfig) -> str:
    """The public commitments file's name."""
    return f"commitments-{config.vault_id}-g{config.generation}.json"


def commitments_json(config: CeremonyConfig) -> str:
    """The public commitments file: vault, generation, threshold, custodians, commitments."""
    return json.dumps({
        "vault_id": config.vault_id, "generation": config.generation,
        "threshold": config.threshold, "custodians": list(config.custodians),
        "commitments": list(config.commitments),
    }, indent=2) + "\n"


def published_config(text: str, obj: str) -> CeremonyConfig:
    """Parse a commitments file."""
    try:
        d = json.loads(text)
        return CeremonyConfig(str(d["vault_id"]), int(d["generation"]), int(d["threshold"]),
                              tuple(d["custodians"]), tuple(d["commitments"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"not a commitments file ({type(exc).__name__})", obj=obj) from None


def published_in_store(store: Store) -> CeremonyConfig:
    """The ceremony configuration (custodians, commitments) the store's keyring publishes."""
    with store.session() as session:
        state = session.get(KeyringState, 1)
    if state is None:
        raise NotFound("the vault is not initialised", obj="keyring")
    return CeremonyConfig.from_json(state.ceremony_json)


def write_share_files(directory: Path, files: Sequence[tuple[str, bytes]]) -> tuple[Path, ...]:
    """Write files under ``directory`` (each: temp name, fsync, rename; then fsync the dir).

    Refuses to overwrite an existing share file. Returns the paths written.
    """
    finals: list[Path] = []
    temps: list[Path] = []
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, data in files:
            final = directory / name
            if final.exists() and name.startswith("share-"):
                raise AlreadyExists("share file exists", obj=str(final),
                                    remedy="move old share files away first")
            temp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            temps.append(temp)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            finals.append(final)
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
        _fsync_dir(directory)
    except OSError as exc:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise InvalidInput(f"cannot write share files ({exc.strerror})", obj=str(directory),
                           remedy="check the shares directory and its permissions") from exc
    return tuple(finals)


def init_vault(
    store: Store,
    *,
    custodians: Sequence[Path],
    threshold: int,
    shares_dir: Path,
    officers: Sequence[Path] = (),
    officer_threshold: int = 1,
    settings: KeysSettings | None = None,
) -> InitResult:
    """Create the keyring: deal the root key (or wrap it in the HSM), pin officers, stay sealed."""
    settings = settings or KeysSettings()
    ring = Keyring(store, settings)
    if ring.status().initialized:
        raise AlreadyExists("the vault is already initialised", obj="keyring",
                            remedy="use `strongroom rekey` to change custodians")
    backend = settings.key_backend
    recipients = [read_custodian(p) for p in custodians]
    if backend == "shamir":
        if len(set(recipients)) != len(recipients):
            raise InvalidInput("a custodian's public key is given twice", obj="--custodian",
                               remedy="each custodian holds exactly one share")
        if not 2 <= threshold <= len(recipients) <= shamir.MAX_SHARES:
            raise InvalidInput(f"cannot deal {threshold}-of-{len(recipients)}",
                               obj="--threshold", remedy="need 2 <= K <= N <= 255 custodians")
    officer_keys = [PublicIdentity.load(p) for p in officers]
    bootstrap: Path | None = None
    if not officer_keys:
        shares_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        bootstrap = shares_dir / BOOTSTRAP_OFFICER
        if bootstrap.exists():  # a previous init was interrupted before committing
            ident = Identity.load(bootstrap)
        else:
            ident = Identity.generate("officer")
            ident.save(bootstrap)
        officer_keys = [ident.public]
        officer_threshold = 1
    if len({o.public_bytes for o in officer_keys}) != len(officer_keys):
        raise InvalidInput("an officer's key is given twice", obj="--officer")

    vault_id = secrets.token_hex(8)
    root = bytearray(os.urandom(ROOT_KEY_LEN))
    files: tuple[Path, ...] = ()
    commitments_file: Path | None = None
    try:
        wrapped_root: bytes | None = None
        if backend == "shamir":
            shares = shamir.split(root, threshold, len(recipients))
            config = CeremonyConfig(vault_id, 1, threshold, tuple(recipients),
                                    tuple(shamir.commit(shares)))
            written = write_share_files(shares_dir, encrypt_share_files(config, shares))
            files, commitments_file = written[:-1], written[-1]
        else:
            wrapped_root = _hsm_wrap_root(settings, root, vault_id)
            config = CeremonyConfig(vault_id, 1, 0, (), ())
            threshold = 0
        try:
            Keyring.create(store, root_key=root, backend=backend, config=config,
                           officers=[o.public_bytes for o in officer_keys],
                           officer_threshold=officer_threshold, wrapped_root=wrapped_root,
                           officer_mldsa={o.public_bytes: o.mldsa_bytes
                                          for o in officer_keys if o.mldsa_bytes})
        except BaseException:
            for f in files:
                f.unlink(missing_ok=True)
            if commitments_file is not None:
                commitments_file.unlink(missing_ok=True)
            raise
    finally:
        root[:] = bytes(len(root))
    return InitResult(vault_id, backend, threshold, files, commitments_file, bootstrap,
                      tuple(o.principal for o in officer_keys))


def _hsm_wrap_root(settings: KeysSettings, root: bytearray, vault_id: str) -> bytes:
    from strongroom.keys.hsm import HsmKek

    token, pin = settings.hsm_token, settings.hsm_pin
    if not token or pin is None:
        raise InvalidInput("the hsm backend needs STRONGROOM_HSM_TOKEN and STRONGROOM_HSM_PIN",
                           obj="keyring")
    library, label = settings.hsm_library, settings.hsm_key_label
    try:
        kek = HsmKek.generate(library, token, pin, label)
    except AlreadyExists:
        kek = HsmKek.open(library, token, pin, label)
    with kek:
        return kek.wrap(bytes(root), vault_id.encode())


def read_share_file(path: Path, identities: Sequence[age.AgeIdentity]) -> ShareContent:
    """Decrypt a custodian's share file with their age identity."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound("share file not found", obj=str(path)) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read share file ({exc.strerror})", obj=str(path)) from exc
    try:
        text = age.decrypt(data, identities)
    except NoIdentityMatched:
        raise NoIdentityMatched(
            "the identity does not match this share file", obj=str(path),
            remedy="use the age identity of the custodian the share was dealt to",
        ) from None
    except (HeaderError, HmacError, PayloadError) as exc:
        raise IntegrityError(f"share file is corrupted ({exc.message})", obj=str(path),
                             remedy="use the custodian's backup copy of the share file") from None
    try:
        d = json.loads(text)
        if d.get("format") != SHARE_FORMAT:
            raise ValueError("unknown format")
        share = shamir.Share.from_bytes(base64.b64decode(d["share"], validate=True))
        content = ShareContent(str(d["vault_id"]), int(d["generation"]), int(d["index"]),
                               int(d["threshold"]), int(d["shares"]), share,
                               str(d["commitment"]))
    except (ValueError, KeyError, TypeError, InvalidInput) as exc:
        raise IntegrityError(f"share file content is malformed ({type(exc).__name__})",
                             obj=str(path)) from None
    if share.x != content.index or not shamir.verify_share(share, content.commitment):
        raise IntegrityError("share does not match the commitment inside its file",
                             obj=str(path), remedy="use the custodian's backup copy")
    return content


def build_submission(status: KeyringStatus, content: ShareContent, *, obj: str = "share") -> bytes:
    """Bind a share to the current ceremony: encrypt it to the ceremony's recipient."""
    if not status.initialized:
        raise InvalidInput("the vault is not initialised", obj="keyring")
    if status.ceremony is None or status.nonce is None or status.ceremony_recipient is None:
        raise InvalidInput("no unseal or rekey ceremony is in progress (already unsealed?)",
                           obj="keyring", remedy="check `strongroom status`")
    if content.vault_id != status.vault_id:
        raise InvalidInput(
            f"the share belongs to vault {content.vault_id}, this vault is {status.vault_id}",
            obj=obj, remedy="submit a share file dealt for this vault")
    body = json.dumps({"nonce": status.nonce, "vault_id": content.vault_id,
                       "generation": content.generation, "index": content.index,
                       "share": base64.b64encode(content.share.to_bytes()).decode()}).encode()
    return age.encrypt(body, [age.parse_recipient(status.ceremony_recipient)])


def verify_share_file(path: Path, identities: Sequence[age.AgeIdentity],
                      published: CeremonyConfig) -> ShareContent:
    """Check a custodian's share against the published commitment (nothing is revealed)."""
    content = read_share_file(path, identities)
    if content.vault_id != published.vault_id or content.generation != published.generation:
        raise InvalidInput(
            f"share is for vault {content.vault_id} g{content.generation}, the published "
            f"commitments are for {published.vault_id} g{published.generation}", obj=str(path))
    if not 1 <= content.index <= len(published.commitments) or not shamir.verify_share(
        content.share, published.commitments[content.index - 1]
    ):
        raise IntegrityError("share does not match the published commitment", obj=str(path),
                             remedy="report it to the security officers; the share is unusable")
    return content
