"""BERT WordPiece tokenization in pure Python, as ``BertTokenizer`` does it.

Build one from the ``vocab.txt`` stored beside the weights (an opaque file of
the artifact) and turn texts into token ids::

    tok = WordPieceTokenizer.from_vocab(weights.file_bytes("vocab.txt"))
    ids = tok.encode("Crème brûlée!", max_length=256)   # [CLS] ... [SEP]

The basic tokenizer cleans control characters, puts spaces around CJK
ideographs, lower-cases and strips accents (NFD, dropping combining marks),
and splits on whitespace and punctuation; WordPiece then splits each word by
greedy longest match against the vocabulary (``##`` marks a continuation).
This matches the Hugging Face tokenizer of all-MiniLM-L6-v2 on the reference
texts in the tests; do not use it for cased or non-BERT vocabularies.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

from strongroom.errors import InvalidInput

__all__ = ["WordPieceTokenizer", "basic_tokenize"]

#: Words longer than this (in characters) become [UNK], as in BERT.
MAX_CHARS_PER_WORD = 100


def _is_whitespace(ch: str) -> bool:
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT treats every ASCII non-letter/number as punctuation (e.g. "^", "$", "`").
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _clean(text: str) -> str:
    out: list[str] = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.extend((" ", ch, " "))
        else:
            out.append(ch)
    return "".join(out)


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current: list[str] = []
    for ch in word:
        if _is_punctuation(ch):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(ch)
        else:
            current.append(ch)
    if current:
        pieces.append("".join(current))
    return pieces


def basic_tokenize(text: str, *, lower_case: bool = True) -> list[str]:
    """Clean, lower-case, strip accents and split on whitespace and punctuation."""
    words: list[str] = []
    for word in _clean(text).split():
        if lower_case:
            word = _strip_accents(word.lower())
        words.extend(_split_punctuation(word))
    return words


class WordPieceTokenizer:
    """A BERT uncased WordPiece tokenizer over a fixed vocabulary."""

    def __init__(self, vocab: Mapping[str, int], *, lower_case: bool = True) -> None:
        for special in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
            if special not in vocab:
                raise InvalidInput(
                    f"the vocabulary has no {special} token",
                    obj="vocab.txt",
                    remedy="store the model's BERT vocab.txt beside its weights",
                )
        self.vocab = dict(vocab)
        self.lower_case = lower_case
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.unk_id = vocab["[UNK]"]
        self.pad_id = vocab["[PAD]"]
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_vocab(cls, data: bytes, *, lower_case: bool = True) -> WordPieceTokenizer:
        """Read a ``vocab.txt`` (one token a line; the line number is its id)."""
        try:
            lines = data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise InvalidInput("vocab.txt is not UTF-8", obj="vocab.txt") from None
        if lines and lines[-1] == "":
            lines.pop()
        vocab: dict[str, int] = {}
        for index, line in enumerate(lines):
            vocab.setdefault(line.rstrip("\r"), index)
        return cls(vocab, lower_case=lower_case)

    def wordpiece(self, word: str) -> tuple[int, ...]:
        """Ids of one basic token, by greedy longest match (``[UNK]`` if it cannot be split)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if len(word) > MAX_CHARS_PER_WORD:
            return (self.unk_id,)
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found: int | None = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                ids = [self.unk_id]
                break
            ids.append(found)
            start = end
        result = tuple(ids)
        if len(self._cache) < 200_000:
            self._cache[word] = result
        return result

    def tokenize_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens or truncation."""
        ids: list[int] = []
        for word in basic_tokenize(text, lower_case=self.lower_case):
            ids.extend(self.wordpiece(word))
        return ids

    def encode(self, text: str, *, max_length: int) -> list[int]:
        """``[CLS] tokens [SEP]``, truncated to ``max_length`` ids in all."""
        if max_length < 2:
            raise InvalidInput("max_length must be at least 2", obj="tokenizer")
        body = self.tokenize_ids(text)[: max_length - 2]
        return [self.cls_id, *body, self.sep_id]

    def encode_batch(self, texts: Sequence[str], *, max_length: int) -> list[list[int]]:
        """:meth:`encode` of each text."""
        return [self.encode(t, max_length=max_length) for t in texts]
