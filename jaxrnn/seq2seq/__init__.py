"""Sequence to sequence: attention, encoder-decoder on the common cells and engine, decoding."""

from jaxrnn.seq2seq.attention import (
    AdditiveParams,
    Attention,
    DotParams,
    GeneralParams,
    additive,
    attend,
    masked_softmax,
    multiplicative,
)
from jaxrnn.seq2seq.decoding import BeamResult, DecodeResult, beam_search, greedy
from jaxrnn.seq2seq.encoder_decoder import (
    AttentionDecoder,
    AttentionDecoderParams,
    AttentionState,
    Encoded,
    FeedbackState,
    Memory,
    Seq2Seq,
    Seq2SeqParams,
    attention_decoder,
    encoder_decoder,
)
from jaxrnn.seq2seq.metrics import edit_distance, error_rates

__all__ = [
    "Attention",
    "AdditiveParams",
    "GeneralParams",
    "DotParams",
    "additive",
    "multiplicative",
    "masked_softmax",
    "attend",
    "greedy",
    "beam_search",
    "DecodeResult",
    "BeamResult",
    "Memory",
    "AttentionState",
    "AttentionDecoderParams",
    "AttentionDecoder",
    "attention_decoder",
    "Seq2SeqParams",
    "Seq2Seq",
    "Encoded",
    "FeedbackState",
    "encoder_decoder",
    "edit_distance",
    "error_rates",
]
