"""Character and word vocabularies with padding and out-of-vocabulary tokens.

Id 0 is always the padding token and id 1 the out-of-vocabulary token, so padded batches from
:func:`jaxrnn.data.pad_sequences` (``value=0``) and unknown symbols need no special cases.
The remaining ids follow decreasing frequency in the corpus the vocabulary was built from (ties
broken by first appearance), so a vocabulary is a deterministic function of its corpus.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

PAD = "<pad>"
OOV = "<unk>"
PAD_ID = 0
OOV_ID = 1

_WORD_RE = re.compile(r"[\w']+|[^\w\s]")


def char_tokenize(text: str) -> list[str]:
    """Every character is a token."""
    return list(text)


def word_tokenize(text: str, *, lower: bool = True) -> list[str]:
    """Words (letters, digits, underscores and apostrophes) and single punctuation marks."""
    return _WORD_RE.findall(text.lower() if lower else text)


class Vocab:
    """A mapping between tokens and ids.

    Args:
      tokens: the vocabulary's tokens, in id order from 2 (PAD and OOV are added in front).
      kind: ``"char"`` or ``"word"``; picks the tokenizer and how :meth:`decode` joins.
      lower: lower-case words before lookup (word vocabularies).
    """

    def __init__(self, tokens: Sequence[str], *, kind: str = "char", lower: bool = True):
        if kind not in ("char", "word"):
            raise ValueError(f"kind: expected 'char' or 'word', got {kind!r}")
        tokens = list(tokens)
        for t in tokens:
            if not isinstance(t, str):
                raise TypeError(f"tokens: expected strings, got {type(t).__name__} {t!r}")
        if PAD in tokens or OOV in tokens or len(set(tokens)) != len(tokens):
            raise ValueError("tokens: must be unique and must not contain the PAD/OOV tokens")
        self.kind = kind
        self.lower = bool(lower)
        self.itos: list[str] = [PAD, OOV, *tokens]
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        *,
        kind: str = "char",
        min_freq: int = 1,
        max_size: int | None = None,
        lower: bool = True,
    ) -> Vocab:
        """Count tokens over ``texts``; keep those seen ``>= min_freq`` times, the most frequent
        first, at most ``max_size`` ids in all (PAD and OOV included)."""
        if isinstance(texts, str):
            raise TypeError("texts: expected an iterable of strings, got one string")
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq: expected an int >= 1, got {min_freq!r}")
        if max_size is not None and (not isinstance(max_size, int) or max_size < 3):
            raise ValueError(f"max_size: expected None or an int >= 3, got {max_size!r}")
        tok = cls._tokenizer(kind, lower)
        counts: Counter = Counter()
        for text in texts:
            counts.update(tok(text))
        # Counter.most_common keeps first-seen order among equal counts.
        kept = [t for t, c in counts.most_common() if c >= min_freq and t not in (PAD, OOV)]
        if max_size is not None:
            kept = kept[: max_size - 2]
        return cls(kept, kind=kind, lower=lower)

    @staticmethod
    def _tokenizer(kind: str, lower: bool) -> Callable[[str], list[str]]:
        if kind == "char":
            return char_tokenize
        if kind == "word":
            return lambda s: word_tokenize(s, lower=lower)
        raise ValueError(f"kind: expected 'char' or 'word', got {kind!r}")

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def tokenize(self, text: str) -> list[str]:
        return self._tokenizer(self.kind, self.lower)(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; unknown tokens map to ``OOV_ID``."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a string, got {type(text).__name__}")
        return [self.stoi.get(t, OOV_ID) for t in self.tokenize(text)]

    def decode(self, ids: Iterable[int], *, skip_pad: bool = True) -> str:
        """Text from ids (characters joined directly, words by spaces); ids outside the
        vocabulary raise."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise ValueError(f"ids: {i} is outside the vocabulary [0, {len(self.itos)})")
            if skip_pad and i == PAD_ID:
                continue
            out.append(self.itos[i])
        return ("" if self.kind == "char" else " ").join(out)

    def to_dict(self) -> dict:
        """A JSON-able description; :meth:`from_dict` rebuilds the same vocabulary."""
        return {"kind": self.kind, "lower": self.lower, "tokens": self.itos[2:]}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(d["tokens"], kind=d["kind"], lower=d.get("lower", True))

    def __repr__(self) -> str:
        return f"Vocab(kind={self.kind!r}, size={len(self)})"


def char_vocab(texts: Iterable[str], **kwargs) -> Vocab:
    """:meth:`Vocab.build` with ``kind="char"``."""
    return Vocab.build(texts, kind="char", **kwargs)


def word_vocab(texts: Iterable[str], **kwargs) -> Vocab:
    """:meth:`Vocab.build` with ``kind="word"``."""
    return Vocab.build(texts, kind="word", **kwargs)


__all__ = [
    "Vocab",
    "char_vocab",
    "word_vocab",
    "char_tokenize",
    "word_tokenize",
    "PAD",
    "OOV",
    "PAD_ID",
    "OOV_ID",
]
