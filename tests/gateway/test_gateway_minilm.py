"""The numpy MiniLM encoder and WordPiece tokenizer against sentence-transformers' output."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from strongroom.errors import InvalidInput
from strongroom.gateway.minilm import MiniLM, limit_blas_threads
from strongroom.gateway.models import load_model
from strongroom.gateway.tokenizer import WordPieceTokenizer, basic_tokenize
from strongroom.vault.vault import Vault

from gateway_helpers import REFERENCE, minilm_dir

CASES = json.loads(REFERENCE.read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread() -> Iterator[None]:
    """As the gateway runs it: BLAS threads spinning against each other crawl on a busy machine."""
    limit_blas_threads(1)
    yield
    limit_blas_threads(os.cpu_count() or 1)


@pytest.fixture(scope="module")
def plain_model() -> MiniLM:
    d = minilm_dir()
    return MiniLM.load(load_file(str(d / "model.safetensors")), lambda p: (d / p).read_bytes())


def _cosine_distances(got: np.ndarray) -> list[float]:
    return [1.0 - float(g @ np.array(c["embedding"]) / np.linalg.norm(c["embedding"]))
            for g, c in zip(got, CASES, strict=True)]


def test_tokenizer_matches_reference_ids() -> None:
    tok = WordPieceTokenizer.from_vocab((minilm_dir() / "vocab.txt").read_bytes())
    for case in CASES:
        assert tok.encode(case["text"], max_length=256) == case["input_ids"], case["text"][:40]


def test_reference_covers_truncation() -> None:
    assert max(len(c["input_ids"]) for c in CASES) == 256


def test_basic_tokenizer_rules() -> None:
    assert basic_tokenize("Héllo,World!") == ["hello", ",", "world", "!"]
    assert basic_tokenize("中文x") == ["中", "文", "x"]
    assert basic_tokenize("a\x00b\u200bc") == ["abc"]


def test_vocab_without_specials_is_refused() -> None:
    with pytest.raises(InvalidInput, match="CLS"):
        WordPieceTokenizer.from_vocab(b"a\nb\n")


def test_numpy_forward_matches_sentence_transformers(plain_model: MiniLM) -> None:
    got = plain_model.embed([c["text"] for c in CASES])
    assert got.shape == (len(CASES), 384) and got.dtype == np.float32
    assert max(_cosine_distances(got)) < 1e-4
    # Batching and ordering do not change a text's vector.
    alone = plain_model.embed([CASES[3]["text"]])
    assert np.allclose(alone[0], got[3], atol=1e-5)


def test_encrypted_weights_give_the_same_embeddings(vault: Vault) -> None:
    vault.import_weights(minilm_dir(), "minilm")
    with vault.open_weights("minilm") as weights:
        model = load_model(weights, weights.file_bytes)
        assert isinstance(model, MiniLM)
        assert max(_cosine_distances(model.embed([c["text"] for c in CASES]))) < 1e-4


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    d = minilm_dir()
    tensors = dict(load_file(str(d / "model.safetensors")))
    del tensors["encoder.layer.3.output.dense.bias"]
    with pytest.raises(InvalidInput, match=r"encoder\.layer\.3\.output\.dense\.bias"):
        MiniLM.load(tensors, lambda p: (d / p).read_bytes())
