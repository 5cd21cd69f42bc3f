"""The small interface behind which model families plug into the gateway.

A model family is a function that builds a :class:`Model` from decrypted
tensors and the artifact's opaque files (config, tokenizer)::

    register_family("bert", MiniLM.load)            # done by strongroom.gateway.minilm
    model = load_model(weights, weights.file_bytes)  # picks the family from config.json
    vectors = model.embed(["a sentence", "another"]) # float32, shape (2, model.dimension)

A model must keep referring to the arrays it was given (zero-copy views of the
vault's decrypted buffers) rather than copying them, so that the gateway can
lock those buffers in memory and the vault can zero them on close; whatever it
does copy it must list in :meth:`Model.arrays`. A model never returns or
exposes its tensors to callers: the gateway serves only :meth:`Model.embed`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from strongroom.errors import InvalidInput, NotFound

__all__ = ["FileReader", "Model", "ModelFamily", "families", "load_model", "register_family"]

#: Reads one of the artifact's opaque files by path (``Weights.file_bytes``).
FileReader = Callable[[str], bytes]


class Model(Protocol):
    """A loaded model that turns texts into vectors."""

    #: Short name of the family, e.g. ``"bert"``.
    family: str
    #: Length of each output vector.
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One float32 row per text."""
        ...

    def arrays(self) -> Iterable[np.ndarray[Any, Any]]:
        """Every array holding weights (for locking them in memory)."""
        ...


class ModelFamily(Protocol):
    """Builds a model from its tensors and opaque files."""

    def __call__(self, tensors: Mapping[str, np.ndarray[Any, Any]], files: FileReader) -> Model:
        """Build the model."""
        ...


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(model_type: str, family: ModelFamily) -> None:
    """Make ``family`` build artifacts whose ``config.json`` says ``model_type``."""
    _FAMILIES[model_type] = family


def families() -> list[str]:
    """The registered model types."""
    _register_builtin()
    return sorted(_FAMILIES)


def _register_builtin() -> None:
    if "bert" not in _FAMILIES:
        from strongroom.gateway.minilm import MiniLM

        register_family("bert", MiniLM.load)


def model_type(files: FileReader) -> str:
    """The ``model_type`` named by the artifact's ``config.json``."""
    try:
        raw = files("config.json")
    except (InvalidInput, NotFound, KeyError, FileNotFoundError):
        raise InvalidInput(
            "the artifact has no config.json naming its model type",
            obj="config.json",
            remedy="import the model directory with its config.json",
        ) from None
    try:
        config = json.loads(raw)
        kind = config["model_type"]
    except (ValueError, KeyError, TypeError):
        raise InvalidInput("config.json has no model_type", obj="config.json") from None
    if not isinstance(kind, str):
        raise InvalidInput("config.json's model_type is not a string", obj="config.json")
    return kind


def load_model(
    tensors: Mapping[str, np.ndarray[Any, Any]], files: FileReader, *, family: str | None = None
) -> Model:
    """Build the model for these tensors with the family its config names (or ``family``)."""
    _register_builtin()
    kind = family or model_type(files)
    builder = _FAMILIES.get(kind)
    if builder is None:
        raise InvalidInput(
            f"no gateway model family for model type {kind!r}",
            obj="config.json",
            remedy=f"register one with strongroom.gateway.models.register_family; known: "
            f"{', '.join(sorted(_FAMILIES))}",
        )
    return builder(tensors, files)
