"""A tiny model family for the red-team target's gateway: hashed characters -> tanh -> vectors.

Its outputs lie in a low-dimensional subspace (like a language model's
logits), so an extraction probe has something to find. It is registered with
the gateway under :data:`FAMILY` when the target is built; it is not a real
model and must not be used outside red-team runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

__all__ = ["FAMILY", "RedTeamToy", "make_model_dir", "register"]

FAMILY = "strongroom-redteam-toy"
HIDDEN = 16
OUT = 64


class RedTeamToy:
    """Embeds texts with two small matrices; keeps references to the vault's buffers."""

    family = FAMILY

    def __init__(self, tensors: Mapping[str, np.ndarray[Any, Any]], files: Any) -> None:
        self.w_in = tensors["toy.in.weight"]
        self.w_out = tensors["toy.out.weight"]
        self.dimension = int(self.w_out.shape[0])

    def arrays(self) -> Iterable[np.ndarray[Any, Any]]:
        """The weight arrays (for locking in memory)."""
        return [self.w_in, self.w_out]

    def embed(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One unit-norm float32 vector per text."""
        feats = np.zeros((len(texts), self.w_in.shape[1]), dtype=np.float32)
        for row, text in enumerate(texts):
            for i, ch in enumerate(text.encode("utf-8")):
                feats[row, (ch * 31 + i * 7) % feats.shape[1]] += 1.0
        hidden = np.tanh(feats @ self.w_in.T / 4.0)
        out = hidden @ self.w_out.T
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        result: np.ndarray[Any, np.dtype[np.float32]] = (out / np.maximum(norms, 1e-12)).astype(
            np.float32)
        return result


def register() -> None:
    """Make the gateway build this family for artifacts whose config says :data:`FAMILY`."""
    from strongroom.gateway.models import register_family

    register_family(FAMILY, RedTeamToy)


def make_model_dir(directory: Path, seed: int = 11) -> Path:
    """Write a model directory (``model.safetensors`` + ``config.json``) of this family."""
    rng = np.random.default_rng(seed)
    tensors = {
        "toy.in.weight": rng.standard_normal((HIDDEN, 48)).astype(np.float32),
        "toy.out.weight": rng.standard_normal((OUT, HIDDEN)).astype(np.float32),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"model_type": FAMILY}))
    return directory
