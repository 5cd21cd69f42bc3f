"""Canaries: decoy artifacts with plausible names and real encrypted blobs.

Nobody has a reason to open a canary, so any request for one of its keys is
an alarm::

    registry = CanaryRegistry(store, alerts)
    registry.plant_weights(vault)                 # e.g. "helios-405b-instruct-rc2"
    registry.plant_document(vault)                # e.g. "pretraining-mixture-2026q3"
    registry.check(request)                       # in the gate, before the unwrap

:meth:`CanaryRegistry.check` raises a ``critical`` alert naming who asked and
returns ``True``; with ``deny=True`` it then refuses the release
(:class:`~strongroom.errors.AccessDenied`). By default the release goes on: a
decoy's weights are random, and an insider who is refused learns which
artifacts are traps. The :class:`~strongroom.monitor.detectors.CanaryTouch`
detector is the backstop over the audit log (a gate without the hook, an
export, a verify).

Canaries are ordinary vault artifacts (``weights.import`` audited as usual);
only ``monitor_canaries`` says which they are. Do not name them in tickets or
chat, and keep the canary table readable to security officers only: a
canary that insiders can list is no canary.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
from sqlalchemy import select

from strongroom.artifacts import base_name
from strongroom.errors import AccessDenied, InvalidInput
from strongroom.monitor.alerts import Alert
from strongroom.store.tables.monitor import CanaryRow

if TYPE_CHECKING:
    from strongroom.monitor.alerts import AlertManager, StoredAlert
    from strongroom.store.db import Store

__all__ = ["CanaryRegistry", "WeightsImporter", "plausible_document_name", "plausible_model_name"]

_FAMILIES = ("helios", "atlas", "meridian", "orion", "zephyr", "aurora", "vanguard", "cobalt")
_SIZES = ("8b", "34b", "70b", "405b", "mx-1t")
_KINDS = ("base", "instruct", "rm", "policy", "distill", "longctx")
_TAGS = ("rc1", "rc2", "rc3", "2026q3", "2026q4", "ft-v2", "final", "hotfix")
_DOCS = ("pretraining-mixture", "scaling-laws-internal", "rl-recipe-notes",
         "arch-ablations", "eval-contamination-audit", "inference-kernels-design",
         "reward-hacking-postmortem", "data-filtering-pipeline")
#: How long a registry trusts its cached canary names before re-reading them.
CACHE_TTL_S = 30.0


def plausible_model_name(rng: random.Random) -> str:
    """A name like ``atlas-70b-instruct-rc2``."""
    return "-".join((rng.choice(_FAMILIES), rng.choice(_SIZES), rng.choice(_KINDS),
                     rng.choice(_TAGS)))


def plausible_document_name(rng: random.Random) -> str:
    """A name like ``scaling-laws-internal-2026q3``."""
    return f"{rng.choice(_DOCS)}-{rng.choice(_TAGS)}"


def _rng(seed: int | None) -> random.Random:
    """Unpredictable names unless a seed is given (tests, demos)."""
    return random.SystemRandom() if seed is None else random.Random(seed)  # noqa: S311


class _Request(Protocol):
    @property
    def principal(self) -> str: ...

    @property
    def artifact(self) -> str: ...

    @property
    def shard(self) -> str: ...


_Imported_co = TypeVar("_Imported_co", covariant=True)
_Imported = TypeVar("_Imported")


class WeightsImporter(Protocol[_Imported_co]):
    """What planting a canary needs from a vault: import a file or directory under a name.

    :class:`~strongroom.vault.vault.Vault` is one (returning its signed
    ``Manifest``); the monitor sits beside the vault, so it names only this.
    """

    def import_weights(self, path: Path, name: str, *,
                       compartments: Sequence[str] = ()) -> _Imported_co:
        """Encrypt ``path`` into a new artifact ``name``; what describes it is returned."""
        ...


def _decoy_weights(path: Path, rng: np.random.Generator, layers: int, width: int) -> None:
    from safetensors.numpy import save_file

    tensors = {"model.embed_tokens.weight": rng.standard_normal((512, width)).astype(np.float16)}
    for i in range(layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"model.layers.{i}.self_attn.{proj}.weight"] = (
                rng.standard_normal((width, width)) * 0.02).astype(np.float16)
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = (
            rng.standard_normal((width * 2, width)) * 0.02).astype(np.float16)
        tensors[f"model.layers.{i}.input_layernorm.weight"] = np.ones(width, dtype=np.float16)
    save_file(tensors, str(path), metadata={"format": "pt"})


class CanaryRegistry:
    """Which artifacts are decoys; plants new ones; alarms on any key request for them."""

    def __init__(self, store: Store, alerts: AlertManager | None = None, *,
                 deny: bool = False) -> None:
        self.store = store
        self.alerts = alerts
        self.deny = deny
        self._lock = threading.Lock()
        self._names: frozenset[str] = frozenset()
        self._loaded = float("-inf")

    def names(self) -> frozenset[str]:
        """Canary artifact names (cached for a few seconds)."""
        with self._lock:
            if time.monotonic() - self._loaded > CACHE_TTL_S:
                with self.store.session(readonly=True) as s:  # never waits for the write lock
                    self._names = frozenset(s.scalars(select(CanaryRow.name)))
                self._loaded = time.monotonic()
            return self._names

    def mark(self, name: str, kind: str = "weights") -> None:
        """Record an existing artifact name as a canary."""
        if not name:
            raise InvalidInput("a canary needs an artifact name", obj="canary")
        with self.store.session() as s:
            if s.get(CanaryRow, name) is None:
                s.add(CanaryRow(name=name, kind=kind, created_at=datetime.now(UTC)))
        with self._lock:
            self._loaded = float("-inf")

    def is_canary(self, artifact: str) -> bool:
        """Whether ``artifact`` (``name`` or ``name@version``) is a decoy."""
        return base_name(artifact) in self.names()

    def plant_weights(self, vault: WeightsImporter[_Imported], name: str | None = None, *,
                      seed: int | None = None, layers: int = 4, width: int = 256,
                      compartments: Sequence[str] = ()) -> _Imported:
        """Import a decoy model (random float16 weights, real encryption) and mark it."""
        rng = _rng(seed)
        name = name or plausible_model_name(rng)
        with tempfile.TemporaryDirectory(prefix="canary-") as tmp:
            path = Path(tmp) / "model.safetensors"
            _decoy_weights(path, np.random.default_rng(rng.getrandbits(64)), layers, width)
            self.mark(name, "weights")
            return vault.import_weights(path, name, compartments=compartments)

    def plant_document(self, vault: WeightsImporter[_Imported], name: str | None = None, *,
                       seed: int | None = None, compartments: Sequence[str] = ()) -> _Imported:
        """Import a decoy document (a plausible markdown note, encrypted) and mark it."""
        rng = _rng(seed)
        name = name or plausible_document_name(rng)
        title = name.replace("-", " ").capitalize()
        body = [f"# {title}", "", "Internal - do not distribute.", ""]
        for i in range(1, 6):
            body += [f"## {i}. Findings", "",
                     f"Run {rng.randrange(1000, 9999)} improved loss by "
                     f"{rng.uniform(0.5, 4):.2f}% over baseline at {rng.choice(_SIZES)} scale; "
                     "see the attached tables for the mixture weights and schedule.", ""]
        with tempfile.TemporaryDirectory(prefix="canary-") as tmp:
            root = Path(tmp) / name
            root.mkdir()
            (root / f"{name}.md").write_text("\n".join(body), encoding="utf-8")
            # The importer wants one tensor file; a document bundle carries its tables as one.
            _decoy_weights(root / "tables.safetensors",
                           np.random.default_rng(rng.getrandbits(64)), 1, 64)
            self.mark(name, "document")
            return vault.import_weights(root, name, compartments=compartments)

    def check(self, request: _Request) -> bool:
        """Raise a critical alert if ``request`` is for a canary; True when it was one."""
        if not self.is_canary(request.artifact):
            return False
        alert = Alert(rule="SR-CANARY", severity="critical", subject=request.principal,
                      obj=request.artifact,
                      message=f"{request.principal} asked for a key of canary "
                      f"{request.artifact}/{request.shard}",
                      dedup_key=f"SR-CANARY:{request.principal}:{request.artifact}:"
                      f"{int(time.time() // 86400)}",
                      details={"shard": request.shard}, techniques=("T1213", "AML.T0007"))
        if self.alerts is not None:
            self.alerts.raise_alert(alert)
        if self.deny:
            raise AccessDenied("this artifact cannot be released", obj=request.artifact,
                               remedy="contact the security team")
        return True

    def last_alerts(self) -> list[StoredAlert]:
        """Recent canary alerts (newest first)."""
        if self.alerts is None:
            return []
        return [a for a in self.alerts.recent(limit=500) if a.rule == "SR-CANARY"]
