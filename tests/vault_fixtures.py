"""Vault fixtures: a vault on each database backend and small safetensors models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from safetensors.numpy import save_file

from strongroom.settings import Settings

if TYPE_CHECKING:
    from strongroom.vault.vault import Vault


def make_model(path: Path, *, seed: int = 0, big: bool = False, prefix: str = "") -> dict[str, np.ndarray]:
    """Write a small safetensors model with several dtypes; return its tensors."""
    rng = np.random.default_rng(seed)
    n = 300_000 if big else 3_000
    tensors = {
        "embed.weight": rng.standard_normal((n // 100, 100)).astype(np.float32),
        "layer.0.w": rng.standard_normal((64, 33)).astype(np.float16),
        "layer.0.b": rng.integers(0, 2**16, size=(77,), dtype=np.uint16),
        "ids": np.arange(512, dtype=np.int64).reshape(1, 512),
        "mask": rng.integers(0, 2, size=(5, 7)).astype(bool),
        "scalar": np.array(3.5, dtype=np.float64),
    }
    tensors = {prefix + k: v for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": "np"})
    return tensors


@contextlib.contextmanager
def unsealed_vault(db_url: str, tmp_path: Path, **settings: object) -> Iterator[Vault]:
    """A vault whose keyring was created by a 2-of-3 ceremony and unsealed in this process.

    The officer identity ``init`` bootstraps signs the release evidence.
    """
    from strongroom.store.db import Store
    from strongroom.vault.vault import Vault

    from keyring_fixtures import unsealed_service

    keystore = Store.open(db_url)
    service, _, _, officer = unsealed_service(keystore, tmp_path / "ceremony")
    try:
        config = Settings(home=tmp_path / "home", database_url=db_url, **settings)  # type: ignore[arg-type]
        with Vault.open(config, keys=service, identity=officer) as v:
            yield v
    finally:
        service.seal()
        keystore.close()


@pytest.fixture
def vault(db_url: str, tmp_path: Path) -> Iterator[Vault]:
    """A fresh, unsealed vault with its data directory in tmp_path, on SQLite or PostgreSQL."""
    with unsealed_vault(db_url, tmp_path) as v:
        yield v


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A small safetensors file and its tensors."""
    path = tmp_path / "model.safetensors"
    return path, make_model(path)
