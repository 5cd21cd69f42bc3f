"""``strongroom doctor``: what is installed and configured unsafely, with the remedy.

Use it like this::

    report = run_doctor(lock=Path("requirements.lock"), keys=service)
    for f in report.findings: print(f.level, f.check, f.message, f.remedy)
    report.ok           # no "error" findings

Checks: installed packages against the hash-pinned lock file (missing, other
version, not in the lock); the vault's seal state; software keys where an
HSM is configured; no witnesses or a zero witness quorum; anything in the data
directory looser than 0700 (directories) or 0600 (files, sockets), or an
identity file readable by others; an HSM PIN left in the environment; which
payload mode the stored blobs are in (an info line), and a warning when the
vault requires AES-256-GCM (``STRONGROOM_CIPHER``) but files are in age's
ChaCha20-Poly1305, which is not FIPS-approved; and a warning for custodians'
shares and transfer bundles wrapped to classical X25519 keys rather than hybrid
post-quantum ones (:mod:`strongroom.supplychain.pq_wraps`); on the threshold
file-key backend, a warning when the pinned commitments file
(``STRONGROOM_THRESHOLD_COMMITMENTS``) pins no share indices (list-only), with
``strongroom keyserver pin`` as the remedy.

Each check takes its inputs as parameters, so tests give real values; it
never changes anything. Do not read ``ok`` as "secure": it means none of
these known-bad settings was found.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.datadir import loose_modes
from strongroom.errors import InvalidInput, StrongroomError
from strongroom.supplychain.sbom import dependency_closure, normalize

if TYPE_CHECKING:
    from strongroom.audit.config import AuditSettings
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.keyring import KeyringStatus
    from strongroom.keys.officers import Officers
    from strongroom.store.db import Store
    from strongroom.supplychain.pq_wraps import Wraps

__all__ = ["DoctorReport", "Finding", "check_lock", "parse_lock", "run_doctor"]

#: Loose paths named one by one; beyond this, one finding counts the rest.
_MAX_MODE_FINDINGS = 20
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


@dataclass(frozen=True)
class Finding:
    """One problem: which check, how bad, what it is, and what to do."""

    check: str
    level: str  # "error" or "warning"
    message: str
    remedy: str


@dataclass
class DoctorReport:
    """Every finding of one run."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not any(f.level == "error" for f in self.findings)


def parse_lock(text: str, *, obj: str = "requirements.lock") -> dict[str, str]:
    """``name -> version`` from a pip-compile style lock file (every pin must carry a hash)."""
    pins: dict[str, str] = {}
    current: str | None = None
    hashed: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match:
            current = normalize(match.group(1))
            pins[current] = match.group(3)
        if "--hash=sha256:" in line and current is not None:
            hashed.add(current)
    unhashed = sorted(set(pins) - hashed)
    if unhashed:
        raise InvalidInput(f"pins without --hash: {', '.join(unhashed)}", obj=obj,
                           remedy="regenerate the lock with --generate-hashes")
    return pins


def check_lock(pins: dict[str, str], report: DoctorReport) -> None:
    """Installed runtime closure of strongroom vs the lock's pins."""
    closure = dependency_closure()
    for name, dist in sorted(closure.items()):
        if name == "strongroom":
            continue
        want = pins.get(name)
        if want is None:
            report.findings.append(Finding("lock", "error", f"{name} {dist.version} is installed but not in the lock",
                                           "regenerate requirements.lock and review the new dependency"))
        elif want != dist.version:
            report.findings.append(Finding("lock", "error", f"{name} is {dist.version}, the lock pins {want}",
                                           "pip install --require-hashes -r requirements.lock"))
    for name, version in sorted(pins.items()):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            report.findings.append(Finding("lock", "error", f"{name}=={version} is locked but not installed",
                                           "pip install --require-hashes -r requirements.lock"))


def _mode_open(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def _check_home_modes(home: Path, add: Callable[[Finding], None]) -> None:
    """One finding per path under the data directory looser than 0700 (dirs) / 0600 (files)."""
    loose = loose_modes(home)
    for item in loose[:_MAX_MODE_FINDINGS]:
        what = "data directory" if item.path == home else "path in the data directory"
        add(Finding("home", "error",
                    f"{what} {item.path} has mode {item.mode:04o}: group or others may use it "
                    f"(strongroom keeps it {item.wanted:04o})", item.remedy))
    if len(loose) > _MAX_MODE_FINDINGS:
        add(Finding("home", "error",
                    f"{len(loose) - _MAX_MODE_FINDINGS} more paths in {home} are accessible to group "
                    "or others", f"chmod -R go-rwx {home}"))


def run_doctor(
    *,
    lock: Path | None,
    status: KeyringStatus | None,
    keys_settings: KeysSettings,
    audit_settings: AuditSettings,
    home: Path,
    environ: dict[str, str] | None = None,
    payload_modes: dict[str, list[str]] | None = None,
    cipher: str | None = None,
    wraps: Wraps | None = None,
    officers: Officers | None = None,
) -> DoctorReport:
    """Run every check; ``status`` None means the keyring could not be reached.

    ``payload_modes`` (cipher -> stored files) and ``cipher`` (the vault's
    setting) and ``wraps`` (custodians, transfer recipients) default to what
    the deployment in ``home`` has; ``officers`` (pinned in the barrier, so
    known only while unsealed) None: their keys are not judged.
    """
    env = dict(os.environ if environ is None else environ)
    report = DoctorReport()
    add = report.findings.append
    if lock is None or not lock.is_file():
        add(Finding("lock", "error", f"lock file {lock} not found",
                    "install from requirements.lock with --require-hashes"))
    else:
        check_lock(parse_lock(lock.read_text(encoding="utf-8"), obj=str(lock)), report)
    if status is None:
        add(Finding("seal", "warning", "the key service could not be reached",
                    "start it with `strongroom unseal`"))
    elif not status.initialized:
        add(Finding("seal", "error", "the vault is not initialised", "run `strongroom init`"))
    elif status.sealed:
        add(Finding("seal", "warning", "the vault is sealed (nothing can be released)",
                    "unseal with a custodian quorum when work needs it"))
    hsm_configured = bool(keys_settings.hsm_token) or keys_settings.key_backend == "hsm"
    backend = status.backend if status is not None and status.initialized else keys_settings.key_backend
    if hsm_configured and backend != "hsm":
        add(Finding("keys", "error",
                    f"an HSM is configured (STRONGROOM_HSM_TOKEN) but the keyring uses {backend} software keys",
                    "re-create the keyring with STRONGROOM_KEY_BACKEND=hsm or remove the HSM settings"))
    if "STRONGROOM_HSM_PIN" in env:
        add(Finding("keys", "warning", "the HSM PIN is in the environment",
                    "answer the PIN prompt instead of exporting STRONGROOM_HSM_PIN"))
    try:
        witnesses = audit_settings.witness_list()
    except StrongroomError as exc:
        add(Finding("witnesses", "error", exc.message, exc.remedy))
        witnesses = []
    if not witnesses:
        add(Finding("witnesses", "error", "no audit witnesses are configured",
                    "set STRONGROOM_WITNESSES and STRONGROOM_WITNESS_QUORUM"))
    elif audit_settings.witness_quorum == 0:
        add(Finding("witnesses", "warning", "witnesses are configured but the quorum is 0",
                    "set STRONGROOM_WITNESS_QUORUM to at least 1"))
    elif audit_settings.witness_quorum > len(witnesses):
        add(Finding("witnesses", "error", "the witness quorum exceeds the number of witnesses",
                    "lower STRONGROOM_WITNESS_QUORUM or add witnesses"))
    _check_home_modes(home, add)
    if keys_settings.identity is not None:
        ident = Path(keys_settings.identity)
        if not ident.exists():
            add(Finding("identity", "error", f"identity file {ident} not found", "fix STRONGROOM_IDENTITY"))
        elif _mode_open(ident):
            add(Finding("identity", "error", f"identity file {ident} is readable by others",
                        f"chmod 600 {ident}"))
    _check_payload_modes(home, payload_modes, cipher, add)
    _check_post_quantum(home, wraps, add, officers)
    _check_threshold_pins(keys_settings, add)
    return report


def _check_threshold_pins(keys_settings: KeysSettings, add: Callable[[Finding], None]) -> None:
    """A warning when the threshold backend's commitments file pins no key server to its index."""
    import json

    path = keys_settings.threshold_commitments
    if keys_settings.file_keys != "threshold" or path is None:
        return
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        add(Finding("threshold-pins", "error",
                    f"the threshold commitments file {path} cannot be read ({type(exc).__name__})",
                    "fix STRONGROOM_THRESHOLD_COMMITMENTS or run `strongroom keyserver pin --out` to it"))
        return
    if not isinstance(data, dict) or not data.get("indices"):
        add(Finding("threshold-pins", "warning",
                    f"the threshold commitments file {path} pins no share indices (list-only): a key server "
                    "that relays another server's partial is counted as its own answer",
                    f"run `strongroom keyserver pin --out {path}` (after setup and after every re-sharing)"))


def _check_post_quantum(home: Path, wraps: Wraps | None, add: Callable[[Finding], None],
                        officers: Officers | None = None) -> None:
    """A warning for custodians, transfer keys and officers that are classical only."""
    from strongroom.supplychain.pq_wraps import deployment_wraps, pq_summary

    if wraps is None:
        from strongroom.settings import Settings

        store = _open_store(Settings(home=home).resolved_database_url)
        if store is None:
            return
        try:
            wraps = deployment_wraps(store)
        except StrongroomError:
            return
        finally:
            store.close()
    message, remedy = pq_summary(wraps, officers)
    if message:
        add(Finding("post-quantum", "warning", message, remedy))


def _check_payload_modes(home: Path, modes: dict[str, list[str]] | None, cipher: str | None,
                         add: Callable[[Finding], None]) -> None:
    """Which payload mode the stored files are in; a warning where the vault requires AES."""
    from strongroom.settings import Settings
    from strongroom.vault.modes import summarize

    settings = Settings(home=home)
    if modes is None:
        modes = _stored_modes(settings.resolved_database_url)
        if modes is None:
            return
    cipher = cipher or settings.cipher
    add(Finding("payload", "info", f"{summarize(modes)} (from the stored manifests; "
                "`strongroom posture assess` verifies them); new imports use " + cipher,
                "set STRONGROOM_CIPHER=aes-256-gcm where FIPS-approved ciphers are required"))
    chacha = modes.get("chacha20-poly1305", [])
    if cipher == "aes-256-gcm" and chacha:
        add(Finding("payload", "warning",
                    f"{len(chacha)} stored files are in ChaCha20-Poly1305 (not FIPS-approved) "
                    f"although the vault requires aes-256-gcm: {', '.join(chacha[:5])}",
                    "re-import them with `strongroom weights import --cipher aes-256-gcm "
                    "--new-version`"))


def _open_store(database_url: str) -> Store | None:
    """The deployment's database as it is (never created or migrated), or None."""
    from strongroom.store.db import Store

    try:
        return Store.open(database_url, schema="current")
    except (StrongroomError, OSError):
        return None


def _stored_modes(database_url: str) -> dict[str, list[str]] | None:
    """The deployment's payload modes, or None where its database cannot be read as it is."""
    from strongroom.vault.modes import payload_modes

    store = _open_store(database_url)
    if store is None:
        return None
    try:
        return payload_modes(store)
    except StrongroomError:
        return None
    finally:
        store.close()

