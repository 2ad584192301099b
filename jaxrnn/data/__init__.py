"""Data utilities: padding and masks, a seeded resumable batch iterator with bucketing,
character and word vocabularies, text vectorisation, label encoding, forecasting windows with a
saved scaler, and optional-dependency imports with install hints."""

from jaxrnn.data.batching import BatchIterator, DataPosition, iterate_in_order
from jaxrnn.data.deps import MissingDependencyError, require
from jaxrnn.data.labels import LabelEncoder
from jaxrnn.data.padding import lengths_from_mask, mask_from_lengths, pad_sequences
from jaxrnn.data.text import TextVectorizer, encode_chars
from jaxrnn.data.vocab import (
    OOV,
    OOV_ID,
    PAD,
    PAD_ID,
    Vocab,
    char_tokenize,
    char_vocab,
    word_tokenize,
    word_vocab,
)
from jaxrnn.data.windows import WindowScaler, as_series, detect_period, sliding_windows

__all__ = [
    "BatchIterator",
    "DataPosition",
    "iterate_in_order",
    "MissingDependencyError",
    "require",
    "pad_sequences",
    "mask_from_lengths",
    "lengths_from_mask",
    "Vocab",
    "char_vocab",
    "word_vocab",
    "char_tokenize",
    "word_tokenize",
    "PAD",
    "OOV",
    "PAD_ID",
    "OOV_ID",
    "LabelEncoder",
    "TextVectorizer",
    "encode_chars",
    "WindowScaler",
    "as_series",
    "detect_period",
    "sliding_windows",
]
