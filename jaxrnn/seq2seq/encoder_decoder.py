r"""Encoder-decoder (sequence to sequence) on the common cells and scan engine.

Shapes: ``B`` batch, ``S`` source length, ``T`` target length, ``E`` embedding size, ``D`` encoder
output (memory) size, ``H`` decoder hidden size, ``O`` attentional size, ``V`` target vocabulary.

* **Encoder**: any :class:`~jaxrnn.Layer` (e.g. ``jaxrnn.stacked([jaxrnn.bidirectional(
  jaxrnn.lstm(64)), jaxrnn.lstm(128)])``) or a bare cell, run over embedded source tokens with
  their lengths. Its outputs ``(B, S, D)`` are the attention memory (zero past each length).
* **Bridge**: the encoder's final carry initialises the decoder. When the two carries have the same
  structure and shapes (e.g. one LSTM(128) into an LSTM(128)) it is passed as is; otherwise all
  its leaves are concatenated and mapped by one dense layer with ``tanh`` onto the decoder's
  carry leaves.
* **Decoder**: any cell, wrapped by :func:`attention_decoder` into another :class:`~jaxrnn.Cell`
  whose carry also holds the attention state, so :func:`jaxrnn.run` runs it for teacher forcing.
  Two published wirings (``style``):

  ``"luong"`` (Luong et al. 2015, with input feeding):

  .. math::
     (s_t, h_t) = \text{cell}(s_{t-1}, [x_t; \tilde h_{t-1}]) \quad
     (c_t, \alpha_t) = \text{attend}(h_t) \quad
     \tilde h_t = \tanh([h_t; c_t] W_c + b_c)

  ``"bahdanau"`` (Bahdanau et al. 2015: the query is the previous decoder state):

  .. math::
     (c_t, \alpha_t) = \text{attend}(s_{t-1}) \quad
     (s_t, h_t) = \text{cell}(s_{t-1}, [x_t; c_t]) \quad
     \tilde h_t = \tanh([h_t; c_t] W_c + b_c)

  Then :math:`p(y_t \mid y_{<t}, x) = \text{softmax}(\tilde h_t W_o + b_o)`. Without attention the
  readout acts on the cell's output :math:`h_t` directly.

* **Training**: teacher forcing over padded targets; the loss is the mean, over valid target
  tokens only, of the cross-entropy. With ``sampling_prob > 0`` (scheduled sampling, Bengio et al.
  2015) each decoder input is, with that probability, the model's own previous greedy prediction
  instead of the gold token; this runs as a feedback cell on the same engine.
* **Decoding**: greedy and beam search from :mod:`jaxrnn.seq2seq.decoding`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import Array, Cell, check_batch_shape, check_positive_int
from jaxrnn.engine import run, sequence_mask
from jaxrnn.layers import Layer, dense, embedding, recurrent
from jaxrnn.seq2seq import decoding
from jaxrnn.seq2seq.attention import Attention, attend, check_memory

# --------------------------------------------------------------------------- attention decoder

class Memory(NamedTuple):
    """What the decoder attends to: encoder outputs, their precomputed keys, the valid mask."""

    values: Array  # (B, S, D)
    keys: Array  # (B, S, K) attention.prepare(values)
    mask: Array  # (B, S) bool, true on valid source positions


class AttentionState(NamedTuple):
    inner: Any  # the wrapped cell's carry
    attentional: Array  # (B, O) \tilde h_{t-1}; fed back as input in the Luong wiring
    weights: Array  # (B, S) attention weights of the last step


class AttentionDecoderParams(NamedTuple):
    inner: Any
    attention: Any
    w_c: Array  # (H + D, O)
    b_c: Array  # (O,)


class AttentionDecoder(NamedTuple):
    """``init(key, input_size) -> params``; ``prepare(params, memory, mask) -> Memory``;
    ``bind(memory: Memory, with_weights=False) -> Cell`` (the decoder cell reading that memory);
    ``initial_carry(params, inner_carry, memory) -> AttentionState``."""

    init: Any
    prepare: Any
    bind: Any
    initial_carry: Any
    output_size: int
    memory_size: int
    inner: Cell


def _query_size(cell: Cell, style: str, input_size: int, key) -> int:
    if style == "luong":
        return cell.output_size
    shape = jax.eval_shape(
        lambda: getattr(cell.initial_carry(cell.init(key, input_size), ()), cell.recurrent_key)
    ).shape
    return int(shape[-1])


def attention_decoder(
    cell: Cell,
    attention: Attention,
    *,
    memory_size: int,
    attentional_size: int | None = None,
    style: str = "luong",
) -> AttentionDecoder:
    """Wrap ``cell`` with attention over a memory of feature size ``memory_size`` (``D``).

    ``attentional_size`` (``O``) defaults to the cell's output size. See the module docstring for
    the equations of the two ``style`` values.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn Cell, got {type(cell)}")
    if not isinstance(attention, Attention):
        raise TypeError(
            f"attention: expected a jaxrnn.seq2seq Attention (additive(...) or "
            f"multiplicative(...)), got {type(attention)}"
        )
    if style not in ("luong", "bahdanau"):
        raise ValueError(f"style: expected 'luong' or 'bahdanau', got {style!r}")
    D = check_positive_int(memory_size, "memory_size")
    O = cell.output_size if attentional_size is None else check_positive_int(
        attentional_size, "attentional_size"
    )
    H = cell.output_size
    feed = O if style == "luong" else D  # what is concatenated to the cell's input

    def init(key, input_size: int) -> AttentionDecoderParams:
        check_positive_int(input_size, "input_size")
        k_cell, k_att, k_c = jax.random.split(key, 3)
        inner = cell.init(k_cell, input_size + feed)
        q = _query_size(cell, style, input_size + feed, k_cell)
        w_c = jax.nn.initializers.glorot_uniform()(k_c, (H + D, O), jnp.float32)
        return AttentionDecoderParams(
            inner, attention.init(k_att, q, D), w_c, jnp.zeros((O,), jnp.float32)
        )

    def prepare(params: AttentionDecoderParams, values: Array, mask: Array) -> Memory:
        check_memory(values, mask)
        if values.shape[-1] != D:
            raise ValueError(
                f"memory: last dimension must be memory_size={D}, got shape {tuple(values.shape)}"
            )
        return Memory(values, attention.prepare(params.attention, values), mask)

    def initial_carry(params, inner_carry, memory: Memory) -> AttentionState:
        batch = memory.values.shape[:-2]
        S = memory.values.shape[-2]
        return AttentionState(
            inner_carry, jnp.zeros((*batch, O), jnp.float32), jnp.zeros((*batch, S), jnp.float32)
        )

    def bind(memory: Memory, with_weights: bool = False) -> Cell:
        S = memory.values.shape[-2]

        def cell_init(key, input_size):
            return init(key, input_size)

        def cell_initial_carry(params, batch_shape=()):
            inner = cell.initial_carry(params.inner, batch_shape)
            batch = check_batch_shape(batch_shape)
            return AttentionState(
                inner, jnp.zeros((*batch, O), jnp.float32), jnp.zeros((*batch, S), jnp.float32)
            )

        def project(params, x):
            # The inner cell's input includes the attention feed, known only inside the step.
            return x

        def step(params: AttentionDecoderParams, carry: AttentionState, x: Array):
            with jax.named_scope("attention_decoder_step"):
                if style == "luong":
                    xin = jnp.concatenate([x, carry.attentional], axis=-1)
                    inner, h = cell.step(params.inner, carry.inner, cell.project(params.inner, xin))
                    ctx, w = attend(
                        attention, params.attention, h, memory.values, memory.keys, memory.mask
                    )
                else:
                    query = getattr(carry.inner, cell.recurrent_key)
                    ctx, w = attend(
                        attention, params.attention, query, memory.values, memory.keys,
                        memory.mask,
                    )
                    xin = jnp.concatenate([x, ctx], axis=-1)
                    inner, h = cell.step(params.inner, carry.inner, cell.project(params.inner, xin))
                out = jnp.tanh(jnp.concatenate([h, ctx], axis=-1) @ params.w_c + params.b_c)
                y = jnp.concatenate([out, w], axis=-1) if with_weights else out
                return AttentionState(inner, out, w), y

        return Cell(
            init=cell_init,
            initial_carry=cell_initial_carry,
            project=project,
            step=step,
            hidden_size=cell.hidden_size,
            output_size=O + S if with_weights else O,
            name=f"attention_{style}_{attention.name}({cell.name})",
            input_size=lambda p: cell.input_size(p.inner) - feed,
        )

    return AttentionDecoder(init, prepare, bind, initial_carry, O, D, cell)


# --------------------------------------------------------------------------- the model

class Seq2SeqParams(NamedTuple):
    source_embedding: Array  # (V_src, E)
    encoder: Any
    bridge: Any  # DenseParams or None (identity / no bridge)
    target_embedding: Array  # (V_tgt, E)
    decoder: Any
    readout: Any  # DenseParams (O, V_tgt)


class Seq2Seq(NamedTuple):
    """An encoder-decoder as pure functions; see :func:`encoder_decoder`."""

    init: Any
    encode: Any
    decoder_cell: Any
    logits: Any
    loss: Any
    step_fn: Any
    greedy: Any
    beam_search: Any
    attention_weights: Any
    bos: int
    eos: int
    pad: int


class Encoded(NamedTuple):
    memory: Any  # Memory, or None without attention
    carry: Any  # the decoder's initial carry (AttentionState with attention)


def _carry_leaves_sizes(tree):
    return [int(leaf.shape[-1]) for leaf in jax.tree_util.tree_leaves(tree)]


def encoder_decoder(
    *,
    source_vocab: int,
    target_vocab: int,
    embed_size: int,
    encoder: Layer | Cell,
    decoder: Cell,
    attention: Attention | None = None,
    style: str = "luong",
    attentional_size: int | None = None,
    bridge: bool = True,
    bos: int = 1,
    eos: int = 2,
    pad: int = 0,
) -> Seq2Seq:
    """Build an encoder-decoder.

    Args:
      source_vocab, target_vocab: vocabulary sizes; token ids are ints in ``[0, vocab)``.
      embed_size: ``E`` for both embeddings.
      encoder: a :class:`~jaxrnn.Layer` (stacked and/or bidirectional) or a cell.
      decoder: any cell.
      attention: ``additive(A)``, ``multiplicative("general" | "dot")`` or ``None``.
      style: ``"luong"`` or ``"bahdanau"`` (see the module docstring).
      bridge: initialise the decoder from the encoder's final carry (else from zeros).
      bos, eos, pad: target token ids (``pad`` positions are ignored by the loss).

    Returns:
      A :class:`Seq2Seq`. Sources ``src`` are ``(B, S)`` int with ``src_lengths (B,)``; targets
      ``tgt`` are ``(B, T)`` int *ending with* ``eos`` and padded with ``pad``, with
      ``tgt_lengths (B,)`` counting the ``eos``. The decoder's input at step ``t`` is ``bos`` for
      ``t = 0`` and ``tgt[t - 1]`` after.
    """
    Vs = check_positive_int(source_vocab, "source_vocab")
    Vt = check_positive_int(target_vocab, "target_vocab")
    E = check_positive_int(embed_size, "embed_size")
    if isinstance(encoder, Cell):
        encoder = recurrent(encoder)
    if not isinstance(encoder, Layer):
        raise TypeError(f"encoder: expected a jaxrnn Layer or Cell, got {type(encoder)}")
    if not isinstance(decoder, Cell):
        raise TypeError(f"decoder: expected a jaxrnn Cell, got {type(decoder)}")
    if attention is not None and not isinstance(attention, Attention):
        raise TypeError(f"attention: expected an Attention or None, got {type(attention)}")
    for name, v, V in (("bos", bos, Vt), ("eos", eos, Vt), ("pad", pad, Vt)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < V:
            raise ValueError(f"{name}: expected a token id in [0, target_vocab={V}), got {v!r}")
    D = encoder.output_size
    src_embed, tgt_embed = embedding(Vs, E), embedding(Vt, E)
    att_dec = (
        attention_decoder(
            decoder, attention, memory_size=D, attentional_size=attentional_size, style=style
        )
        if attention is not None
        else None
    )
    O = att_dec.output_size if att_dec is not None else decoder.output_size
    readout = dense(Vt)

    def _enc_carry_shape(enc_params):
        return jax.eval_shape(
            lambda p: encoder.apply_with_carry(p, jnp.zeros((1, 1, E)),
                                               lengths=jnp.ones((1,), jnp.int32))[0],
            enc_params,
        )

    def _bridge_mode(enc_params, dec_params):
        if not bridge:
            return "zeros"
        enc_c = _enc_carry_shape(enc_params)
        dec_c = jax.eval_shape(lambda p: decoder.initial_carry(p, (1,)), dec_params)
        same = jax.tree_util.tree_structure(enc_c) == jax.tree_util.tree_structure(dec_c) and all(
            a.shape == b.shape
            for a, b in zip(
                jax.tree_util.tree_leaves(enc_c), jax.tree_util.tree_leaves(dec_c), strict=True
            )
        )
        return "identity" if same else "dense"

    def _inner_params(params):
        return params.decoder.inner if att_dec is not None else params.decoder

    def init(key) -> Seq2SeqParams:
        ks, ke, kb, kt, kd, kr = jax.random.split(key, 6)
        enc_p = encoder.init(ke, E)
        dec_p = att_dec.init(kd, E) if att_dec is not None else decoder.init(kd, E)
        inner_p = dec_p.inner if att_dec is not None else dec_p
        mode = _bridge_mode(enc_p, inner_p)
        bridge_p = None
        if mode == "dense":
            n_in = sum(_carry_leaves_sizes(_enc_carry_shape(enc_p)))
            n_out = sum(
                _carry_leaves_sizes(
                    jax.eval_shape(lambda p: decoder.initial_carry(p, (1,)), inner_p)
                )
            )
            bridge_p = dense(n_out).init(kb, n_in)
        return Seq2SeqParams(
            src_embed.init(ks), enc_p, bridge_p, tgt_embed.init(kt), dec_p, readout.init(kr, O)
        )

    def _check_tokens(ids, lengths, argname, V):
        if not hasattr(ids, "shape") or ids.ndim != 2:
            raise ValueError(
                f"{argname}: expected int token ids of shape (B, length), got "
                f"{getattr(ids, 'shape', type(ids).__name__)}"
            )
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(f"{argname}: expected integer token ids, got dtype {ids.dtype}")
        lname = f"{argname}_lengths"
        if not hasattr(lengths, "shape") or tuple(lengths.shape) != (ids.shape[0],):
            raise ValueError(
                f"{lname}: expected shape ({ids.shape[0]},), got "
                f"{getattr(lengths, 'shape', type(lengths).__name__)}"
            )
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"{lname}: expected an integer array, got dtype {lengths.dtype}")
        if not isinstance(ids, jax.core.Tracer):
            a = np.asarray(ids)
            if a.size and (a.min() < 0 or a.max() >= V):
                raise ValueError(
                    f"{argname}: ids must lie in [0, {V}), got min {a.min()} max {a.max()}"
                )
        if not isinstance(lengths, jax.core.Tracer):
            lv = np.asarray(lengths)
            if lv.size and (lv.min() < 0 or lv.max() > ids.shape[1]):
                raise ValueError(
                    f"{lname}: values must lie in [0, {ids.shape[1]}], got min {lv.min()} "
                    f"max {lv.max()}"
                )

    def encode(params: Seq2SeqParams, src, src_lengths, *, key=None, deterministic=True):
        """Run the encoder; return the decoder's memory and initial carry as :class:`Encoded`."""
        _check_tokens(src, src_lengths, "src", Vs)
        xs = src_embed.apply(params.source_embedding, src)
        enc_carry, ys = encoder.apply_with_carry(
            params.encoder, xs, lengths=src_lengths, key=key, deterministic=deterministic
        )
        B = src.shape[0]
        inner_p = _inner_params(params)
        zeros = decoder.initial_carry(inner_p, (B,))
        if params.bridge is not None:
            flat = jnp.concatenate(jax.tree_util.tree_leaves(enc_carry), axis=-1)
            z = jnp.tanh(flat @ params.bridge.w + params.bridge.b)
            sizes = _carry_leaves_sizes(zeros)
            parts = jnp.split(z, np.cumsum(sizes)[:-1], axis=-1)
            inner = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(zeros), parts)
        elif bridge:
            inner = enc_carry  # same structure and shapes as the decoder's carry
        else:
            inner = zeros
        if att_dec is None:
            return Encoded(None, inner)
        mask = sequence_mask(src_lengths, src.shape[1])
        memory = att_dec.prepare(params.decoder, ys, mask)
        return Encoded(memory, att_dec.initial_carry(params.decoder, inner, memory))

    def decoder_cell(encoded: Encoded, with_weights: bool = False) -> Cell:
        """The decoder as a :class:`~jaxrnn.Cell` reading ``encoded.memory``."""
        return decoder if att_dec is None else att_dec.bind(encoded.memory, with_weights)

    def _dec_params(params):
        return params.decoder

    def _shift_right(tgt):
        return jnp.concatenate(
            [jnp.full((tgt.shape[0], 1), bos, tgt.dtype), tgt[:, :-1]], axis=1
        )

    def logits(
        params, src, src_lengths, tgt, tgt_lengths, *, sampling_prob=0.0, key=None,
        deterministic=True,
    ):
        """Teacher-forced next-token logits ``(B, T, V)`` (zero past each target length).

        ``sampling_prob > 0`` (scheduled sampling) needs ``key``: each step after the first
        feeds, with that probability, the model's own previous argmax instead of ``tgt[t-1]``.
        """
        _check_tokens(tgt, tgt_lengths, "tgt", Vt)
        if not isinstance(sampling_prob, (int, float)) or not 0.0 <= sampling_prob <= 1.0:
            raise ValueError(f"sampling_prob: expected a float in [0, 1], got {sampling_prob!r}")
        if sampling_prob > 0 and key is None:
            raise ValueError("key: scheduled sampling (sampling_prob > 0) needs a PRNG key")
        k_enc = k_ss = None
        if key is not None:
            k_enc, k_ss = jax.random.split(key)
        enc = encode(params, src, src_lengths, key=k_enc, deterministic=deterministic)
        cell = decoder_cell(enc)
        gold = tgt_embed.apply(params.target_embedding, _shift_right(tgt))
        if sampling_prob == 0:
            _, ys = run(cell, _dec_params(params), gold, carry=enc.carry, lengths=tgt_lengths)
            return readout.apply(params.readout, ys)
        coin = jax.random.bernoulli(k_ss, sampling_prob, tgt.shape).at[:, 0].set(False)
        fb = _feedback_cell(cell, params, tgt_embed, readout)
        xs = jnp.concatenate([gold, coin[..., None].astype(gold.dtype)], axis=-1)
        carry = FeedbackState(enc.carry, jnp.full((tgt.shape[0],), bos, jnp.int32))
        _, out = run(fb, params, xs, carry=carry, lengths=tgt_lengths)
        return out

    def loss(params, src, src_lengths, tgt, tgt_lengths, **kw):
        """Mean cross-entropy over valid target tokens (positions ``< tgt_lengths``)."""
        lg = logits(params, src, src_lengths, tgt, tgt_lengths, **kw)
        logp = jax.nn.log_softmax(lg, axis=-1)
        nll = -jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]
        mask = sequence_mask(tgt_lengths, tgt.shape[1])
        return jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

    def step_fn(params):
        """``step_fn(static=memory, state=carry, tokens) -> (carry, log_probs)`` for decoding."""

        def fn(memory, carry, tokens):
            cell = decoder if att_dec is None else att_dec.bind(memory)
            x = tgt_embed.apply(params.target_embedding, tokens)
            carry, y = cell.step(_dec_params(params), carry, cell.project(_dec_params(params), x))
            return carry, jax.nn.log_softmax(readout.apply(params.readout, y), axis=-1)

        return fn

    def _static(enc, B):
        # Without attention there is nothing per-example to carry; a dummy keeps the API uniform.
        return enc.memory if enc.memory is not None else jnp.zeros((B, 1))

    def greedy_decode(params, src, src_lengths, *, max_len: int):
        """Greedy decoding; returns a :class:`~jaxrnn.seq2seq.decoding.DecodeResult`."""
        enc = encode(params, src, src_lengths)
        B = src.shape[0]
        return decoding.greedy(
            step_fn(params), _static(enc, B), enc.carry, batch_size=B, bos=bos, eos=eos,
            max_len=max_len, pad=pad,
        )

    def beam_decode(params, src, src_lengths, *, max_len: int, beam_width: int,
                    length_penalty: float = 0.0):
        """Beam search; returns a :class:`~jaxrnn.seq2seq.decoding.BeamResult`."""
        enc = encode(params, src, src_lengths)
        B = src.shape[0]
        return decoding.beam_search(
            step_fn(params), _static(enc, B), enc.carry, batch_size=B, beam_width=beam_width,
            bos=bos, eos=eos, max_len=max_len, length_penalty=length_penalty, pad=pad,
        )

    def attention_weights(params, src, src_lengths, tgt, tgt_lengths):
        """Teacher-forced attention weights ``(B, T, S)`` (zero past lengths)."""
        if att_dec is None:
            raise ValueError("attention: this model has no attention (attention=None)")
        _check_tokens(tgt, tgt_lengths, "tgt", Vt)
        enc = encode(params, src, src_lengths)
        cell = decoder_cell(enc, with_weights=True)
        gold = tgt_embed.apply(params.target_embedding, _shift_right(tgt))
        _, ys = run(cell, params.decoder, gold, carry=enc.carry, lengths=tgt_lengths)
        return ys[..., att_dec.output_size:]

    return Seq2Seq(
        init, encode, decoder_cell, logits, loss, step_fn, greedy_decode, beam_decode,
        attention_weights, bos, eos, pad,
    )


# --------------------------------------------------------------------------- scheduled sampling

class FeedbackState(NamedTuple):
    decoder: Any  # the decoder cell's carry
    token: Array  # (B,) int32, the model's argmax prediction at the previous step


def _feedback_cell(cell: Cell, params: Seq2SeqParams, tgt_embed, readout) -> Cell:
    """A cell over inputs ``[gold embedding; coin]`` that feeds the previous prediction's
    embedding where ``coin == 1`` and emits next-token logits. Its params are the whole
    :class:`Seq2SeqParams` (it embeds and reads out inside the step)."""

    def step(p: Seq2SeqParams, carry: FeedbackState, x):
        gold, coin = x[..., :-1], x[..., -1:]
        mine = tgt_embed.apply(p.target_embedding, carry.token)
        inp = jnp.where(coin > 0.5, mine, gold)
        c, y = cell.step(p.decoder, carry.decoder, cell.project(p.decoder, inp))
        lg = readout.apply(p.readout, y)
        return FeedbackState(c, jnp.argmax(lg, axis=-1).astype(jnp.int32)), lg

    return Cell(
        init=lambda key, input_size: params,
        initial_carry=lambda p, batch_shape=(): FeedbackState(
            cell.initial_carry(p.decoder, batch_shape),
            jnp.zeros(check_batch_shape(batch_shape), jnp.int32),
        ),
        project=lambda p, x: x,
        step=step,
        hidden_size=cell.hidden_size,
        output_size=readout.output_size,
        name=f"scheduled_sampling({cell.name})",
        input_size=lambda p: p.target_embedding.shape[1] + 1,
    )


__all__ = [
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
]
