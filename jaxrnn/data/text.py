"""Text vectorisation: strings -> post-padded token ids and lengths, with a saved vocabulary.

:class:`TextVectorizer` is the piece a text classifier or language model needs between a
user's strings and the model: :meth:`~TextVectorizer.fit` builds a character or word
:class:`~jaxrnn.data.Vocab` from the training texts, :meth:`~TextVectorizer.transform` maps any
texts to ``(ids (N, T) int32, lengths (N,) int32)`` padded at the end (id 0), as the engine's
``lengths`` expect, and :meth:`~TextVectorizer.to_dict` / :meth:`~TextVectorizer.from_dict`
save and restore it as JSON. :func:`encode_chars` maps one long text to ids by table lookup
(fast enough for megabytes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxrnn.data.padding import pad_sequences
from jaxrnn.data.vocab import OOV_ID, Vocab


def encode_chars(text: str, vocab: Vocab) -> np.ndarray:
    """Token ids ``(len(text),)`` int32 of a character vocabulary (unknown characters map to
    ``OOV_ID``), by one table lookup over the code points."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a string, got {type(text).__name__}")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    top = max([int(codes.max(initial=0))] + [ord(t) for t in vocab.stoi if len(t) == 1])
    table = np.full(top + 1, OOV_ID, np.int32)
    for token, i in vocab.stoi.items():
        if len(token) == 1:
            table[ord(token)] = i
    return table[codes]


def _check_texts(texts, argname: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{argname}: expected a list of strings, got one string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{argname}[{i}]: expected a string, got {type(t).__name__} {t!r}")
    return texts


class TextVectorizer:
    """Strings to padded token ids.

    Args:
      kind: ``"char"`` or ``"word"`` tokens.
      max_len: cut every text to its first ``max_len`` tokens (None: the longest text seen by
        :meth:`transform`).
      max_tokens: vocabulary size cap (PAD and OOV included); None keeps every token.
      min_freq: keep tokens seen at least this often in the training texts.
      lower: lower-case words (word vocabularies).
    """

    def __init__(self, kind: str = "word", *, max_len: int | None = None,
                 max_tokens: int | None = None, min_freq: int = 1, lower: bool = True,
                 vocab: Vocab | None = None):
        if kind not in ("char", "word"):
            raise ValueError(f"kind: expected 'char' or 'word', got {kind!r}")
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int)
                                    or max_len < 1):
            raise ValueError(f"max_len: expected None or a positive integer, got {max_len!r}")
        self.kind, self.max_len, self.max_tokens = kind, max_len, max_tokens
        self.min_freq, self.lower = min_freq, bool(lower)
        self.vocab = vocab

    def fit(self, texts: Sequence[str]) -> TextVectorizer:
        """Build the vocabulary from ``texts``; returns ``self``."""
        texts = _check_texts(texts, "texts")
        if not texts:
            raise ValueError("texts: expected at least one text, got none")
        self.vocab = Vocab.build(texts, kind=self.kind, min_freq=self.min_freq,
                                 max_size=self.max_tokens, lower=self.lower)
        return self

    def _vocab(self) -> Vocab:
        if self.vocab is None:
            raise ValueError("TextVectorizer: call fit(texts) first (no vocabulary yet)")
        return self.vocab

    @property
    def vocab_size(self) -> int:
        return len(self._vocab())

    def transform(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (N, T) int32, lengths (N,) int32)``: each text's first ``max_len`` token ids,
        padded at the end with 0. An empty text keeps one OOV token, so every sequence has a
        valid step for the model to summarise."""
        vocab = self._vocab()
        texts = _check_texts(texts, "texts")
        ids = [vocab.encode(t) or [OOV_ID] for t in texts]
        return pad_sequences(ids, maxlen=self.max_len, truncating="post", return_lengths=True)

    def to_dict(self) -> dict:
        """A JSON-able description (vocabulary included); :meth:`from_dict` restores it."""
        return {"kind": self.kind, "max_len": self.max_len, "max_tokens": self.max_tokens,
                "min_freq": self.min_freq, "lower": self.lower,
                "vocab": self._vocab().to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> TextVectorizer:
        return cls(d["kind"], max_len=d.get("max_len"), max_tokens=d.get("max_tokens"),
                   min_freq=d.get("min_freq", 1), lower=d.get("lower", True),
                   vocab=Vocab.from_dict(d["vocab"]))

    def __repr__(self) -> str:
        size = None if self.vocab is None else len(self.vocab)
        return f"TextVectorizer(kind={self.kind!r}, max_len={self.max_len}, vocab_size={size})"


__all__ = ["TextVectorizer", "encode_chars"]
