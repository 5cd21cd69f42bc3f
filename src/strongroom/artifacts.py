"""The name of a stored artifact: ``ArtifactRef`` (``name@version``) and how to read one.

Every module that meets ``minilm@3`` or a bare ``minilm`` reads it here instead of
splitting on ``@`` by hand::

    ref = ArtifactRef.parse("minilm@3")      # ArtifactRef(name="minilm", version=3)
    ref.name, ref.version, str(ref)          # "minilm", 3, "minilm@3"
    ArtifactRef.parse("minilm").version      # None: "the latest" where a caller allows it
    base_name("minilm@3")                    # "minilm" (the name budgets and labels key on)

A reference names no version when it has no ``@``; a version, when present, is a
positive integer. Anything else is refused with :class:`~strongroom.errors.InvalidInput`.
"""

from __future__ import annotations

from dataclasses import dataclass

from strongroom.errors import InvalidInput

__all__ = ["ArtifactRef", "base_name"]


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """``name`` and, when pinned, ``version`` of one artifact."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str, *, obj: str = "artifact") -> ArtifactRef:
        """Read ``name`` or ``name@version``; ``obj`` names the argument in errors."""
        name, at, version = str(text).partition("@")
        if not name:
            raise InvalidInput(f"{text!r} names no artifact", obj=obj,
                               remedy="write NAME or NAME@VERSION, e.g. minilm@3")
        if not at:
            return cls(name)
        if not version.isdigit() or int(version) < 1:
            raise InvalidInput(f"{text!r}: the version must be a positive integer", obj=obj,
                               remedy="write NAME or NAME@VERSION, e.g. minilm@3")
        return cls(name, int(version))

    def pinned(self, version: int) -> ArtifactRef:
        """This name at ``version``."""
        return ArtifactRef(self.name, version)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


def base_name(ref: str) -> str:
    """``minilm`` of ``minilm@3``; a bare name stays as it is (never raises)."""
    return ref.split("@", 1)[0]
