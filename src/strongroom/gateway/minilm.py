"""Sentence embeddings with the BERT/MiniLM encoder in numpy, from decrypted tensors.

Build the model from an open :class:`~strongroom.vault.loader.Weights` (the
vault's zero-copy, read-only arrays) and its ``vocab.txt``::

    with vault.open_weights("minilm") as w:
        model = MiniLM.load(w, w.file_bytes)
        vectors = model.embed(["a sentence"])     # (1, 384) float32, unit length

The forward pass is BERT's: word + position + token-type embeddings, LayerNorm,
then per layer multi-head self-attention and a GELU feed-forward block, each
followed by a residual LayerNorm; sentence-transformers' mean pooling over the
attention mask and L2 normalisation finish it. Tensor names are those of the
Hugging Face ``BertModel`` safetensors (``encoder.layer.N.attention.self.query.weight``...).
It matches sentence-transformers' all-MiniLM-L6-v2 within 1e-4 cosine distance
(tests/gateway/minilm_reference.json). Keep the :class:`Weights` open while the
model is in use: the model holds views of its buffers, never copies.
"""

from __future__ import annotations

import ctypes
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from strongroom.errors import InvalidInput
from strongroom.gateway.models import FileReader
from strongroom.gateway.tokenizer import WordPieceTokenizer

__all__ = ["BertConfig", "MiniLM", "limit_blas_threads"]

F32 = np.ndarray[Any, np.dtype[np.float32]]
#: Texts per forward pass: big enough for BLAS, small enough to bound padding and memory.
BATCH_SIZE = 32
#: sentence-transformers' default for all-MiniLM-L6-v2 when no sentence_bert_config.json says.
DEFAULT_MAX_SEQ_LENGTH = 256


@dataclass(frozen=True)
class BertConfig:
    """The parts of a Hugging Face BERT ``config.json`` the forward pass needs."""

    hidden_size: int
    num_layers: int
    num_heads: int
    layer_norm_eps: float
    max_position: int
    max_seq_length: int

    @classmethod
    def parse(cls, config: bytes, sentence_config: bytes | None) -> BertConfig:
        """Read ``config.json`` and, when present, ``sentence_bert_config.json``."""
        try:
            c = json.loads(config)
            if c.get("hidden_act", "gelu") != "gelu":
                raise ValueError("activation")
            if c.get("position_embedding_type", "absolute") != "absolute":
                raise ValueError("position embeddings")
            max_position = int(c["max_position_embeddings"])
            max_seq = DEFAULT_MAX_SEQ_LENGTH
            if sentence_config is not None:
                max_seq = int(json.loads(sentence_config).get("max_seq_length", max_seq))
            return cls(
                hidden_size=int(c["hidden_size"]),
                num_layers=int(c["num_hidden_layers"]),
                num_heads=int(c["num_attention_heads"]),
                layer_norm_eps=float(c.get("layer_norm_eps", 1e-12)),
                max_position=max_position,
                max_seq_length=min(max_seq, max_position),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(
                f"config.json is not a supported BERT configuration ({exc})",
                obj="config.json",
                remedy="the numpy encoder supports absolute-position BERT models with GELU",
            ) from None


def _erf(x: F32) -> F32:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and the
    # model uses the exact (erf) GELU, not the tanh approximation.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    out: F32 = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return out


def _gelu(x: F32) -> F32:
    out: F32 = (0.5 * x * (1.0 + _erf(x * np.float32(1.0 / math.sqrt(2.0))))).astype(np.float32)
    return out


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    out: F32 = centred / np.sqrt(var + np.float32(eps)) * weight + bias
    return out


def _linear(x: F32, weight: F32, bias: F32) -> F32:
    out: F32 = x @ weight.T + bias
    return out


_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")


def limit_blas_threads(threads: int) -> bool:
    """Set numpy's bundled OpenBLAS to ``threads`` threads, process-wide; False if not found.

    A server runs one forward pass per request thread: letting each also fan out
    over every core makes OpenBLAS's threads spin against each other (ten times
    slower on a busy 2-core machine), so the gateway asks for one.
    """
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for lib in sorted(libs.glob("libscipy_openblas*.so*")) + sorted(libs.glob("libopenblas*.so*")):
        try:
            dll = ctypes.CDLL(str(lib))
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(dll, name, None)
            if setter is not None:
                setter.argtypes = [ctypes.c_int]
                setter(threads)
                return True
    return False


class MiniLM:
    """A BERT encoder with mean pooling and L2 normalisation (all-MiniLM-L6-v2)."""

    family = "bert"

    def __init__(
        self,
        tensors: Mapping[str, np.ndarray[Any, Any]],
        tokenizer: WordPieceTokenizer,
        config: BertConfig,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.dimension = config.hidden_size
        self.max_tokens = config.max_seq_length
        self._t: dict[str, F32] = {}
        for name in self._required_names():
            array = tensors.get(name)
            if array is None:
                raise InvalidInput(
                    f"tensor {name!r} is missing", obj="BERT weights",
                    remedy="the artifact must hold a Hugging Face BertModel's tensors",
                )
            if array.dtype != np.float32:
                raise InvalidInput(f"tensor {name!r} is {array.dtype}, expected float32",
                                   obj="BERT weights")
            self._t[name] = array
        if config.hidden_size % config.num_heads:
            raise InvalidInput("hidden size is not a multiple of the head count", obj="config.json")

    @classmethod
    def load(cls, tensors: Mapping[str, np.ndarray[Any, Any]], files: FileReader) -> MiniLM:
        """Build from tensors and the opaque files ``config.json``, ``vocab.txt``, ``sentence_bert_config.json``."""
        try:
            sentence = files("sentence_bert_config.json")
        except (InvalidInput, KeyError, FileNotFoundError):
            sentence = None
        config = BertConfig.parse(files("config.json"), sentence)
        tokenizer = WordPieceTokenizer.from_vocab(files("vocab.txt"))
        return cls(tensors, tokenizer, config)

    def _required_names(self) -> Iterator[str]:
        yield from (
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.LayerNorm.bias",
        )
        for i in range(self.config.num_layers):
            p = f"encoder.layer.{i}."
            for part in (
                "attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense",
                "attention.output.LayerNorm", "output.LayerNorm",
            ):
                yield f"{p}{part}.weight"
                yield f"{p}{part}.bias"

    def arrays(self) -> list[np.ndarray[Any, Any]]:
        """The weight arrays the forward pass reads."""
        return list(self._t.values())

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids (with [CLS]/[SEP], truncated to ``max_tokens``) of each text."""
        return self.tokenizer.encode_batch(texts, max_length=self.max_tokens)

    def embed(self, texts: Sequence[str]) -> F32:
        """Unit-length sentence embeddings, one float32 row per text."""
        ids = self.token_ids(texts)
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), BATCH_SIZE):
            chunk = order[start : start + BATCH_SIZE]
            out[chunk] = self._forward([ids[i] for i in chunk])
        return out

    def _forward(self, batch: list[list[int]]) -> F32:
        t, c = self._t, self.config
        n, length = len(batch), max(len(x) for x in batch)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = (
            t["embeddings.word_embeddings.weight"][ids]
            + t["embeddings.position_embeddings.weight"][:length]
            + t["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"],
                        c.layer_norm_eps)
        heads, width = c.num_heads, c.hidden_size // c.num_heads
        scale = np.float32(1.0 / math.sqrt(width))
        additive = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        for i in range(c.num_layers):
            p = f"encoder.layer.{i}."

            def proj(name: str, h: F32, p: str = p) -> F32:
                return _linear(h, t[f"{p}{name}.weight"], t[f"{p}{name}.bias"])

            def split(h: F32) -> F32:
                # Contiguous heads: numpy's stacked matmul uses BLAS only on contiguous blocks.
                return np.ascontiguousarray(h.reshape(n, length, heads, width).transpose(0, 2, 1, 3))

            q = split(proj("attention.self.query", x))
            k = split(proj("attention.self.key", x))
            v = split(proj("attention.self.value", x))
            scores = (q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2))) * scale + additive
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, c.hidden_size)
            x = _layer_norm(
                x + proj("attention.output.dense", context),
                t[f"{p}attention.output.LayerNorm.weight"],
                t[f"{p}attention.output.LayerNorm.bias"],
                c.layer_norm_eps,
            )
            hidden = _gelu(proj("intermediate.dense", x))
            x = _layer_norm(
                x + proj("output.dense", hidden),
                t[f"{p}output.LayerNorm.weight"],
                t[f"{p}output.LayerNorm.bias"],
                c.layer_norm_eps,
            )
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        result: F32 = (pooled / norms).astype(np.float32)
        return result
