"""Encoder-decoder: teacher forcing (perfect model, masking, a Python loop over the cell),
bridge, scheduled sampling, gradients, errors; PER/WER edit distance by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from jaxrnn.seq2seq import additive, edit_distance, encoder_decoder, error_rates, multiplicative

PAD, BOS, EOS = 0, 1, 2
SRC = jnp.array([[3, 4, 5, 6], [7, 3, 0, 0], [4, 4, 4, 0]], jnp.int32)
SRC_LEN = jnp.array([4, 2, 3], jnp.int32)
TGT = jnp.array([[3, 4, 2, 0, 0], [4, 3, 3, 4, 2], [2, 0, 0, 0, 0]], jnp.int32)
TGT_LEN = jnp.array([3, 5, 1], jnp.int32)


def _model(attention="general", style="luong", decoder=None, encoder=None, embed=4, **kw):
    att = {"general": multiplicative("general"), "additive": additive(6), None: None}[attention]
    enc = encoder or jaxrnn.bidirectional(jaxrnn.gru(3))
    return encoder_decoder(
        source_vocab=8, target_vocab=5, embed_size=embed, encoder=enc,
        decoder=decoder or jaxrnn.lstm(6), attention=att, style=style, **kw,
    )


# --------------------------------------------------------------------------- teacher forcing

def _perfect_model():
    """A model whose next token is a fixed function of the previous one: bos->3, 3->4, 4->3.
    One-hot embeddings, an Elman decoder copying its input (w_h = 0, so the bridged initial state
    is ignored), the attentional layer applying the permutation and ignoring the context, and a
    readout with logit margin 100, so the correct token has probability 1 in float32."""
    V = 5
    model = _model(decoder=jaxrnn.elman(V), attentional_size=V, embed=V)
    p = jax.jit(model.init)(jax.random.key(0))
    nxt = {BOS: 3, 3: 4, 4: 3, EOS: 3, PAD: 3}
    perm = np.zeros((V, V), np.float32)
    for a, b in nxt.items():
        perm[a, b] = 1.0
    d = p.decoder
    w_x = np.zeros(d.inner.w_x.shape, np.float32)  # (E + O, H): only the embedding part is used
    w_x[:V] = 10.0 * np.eye(V)
    inner = d.inner._replace(w_x=jnp.asarray(w_x), w_h=jnp.zeros_like(d.inner.w_h),
                             b=jnp.zeros_like(d.inner.b))
    w_c = np.zeros(d.w_c.shape, np.float32)  # rows: [h (V); context (D)]
    w_c[:V] = 10.0 * perm
    decoder = d._replace(inner=inner, w_c=jnp.asarray(w_c), b_c=jnp.zeros_like(d.b_c))
    readout = p.readout._replace(w=100.0 * jnp.eye(V), b=jnp.zeros((V,)))
    p = p._replace(target_embedding=jnp.eye(V), decoder=decoder, readout=readout)
    return model, p


@pytest.mark.slow
def test_perfect_model_has_zero_loss_and_padding_is_ignored():
    model, p = _perfect_model()
    loss_fn = jax.jit(model.loss)
    tgt = jnp.array([[3, 4, 3, 4], [3, 4, 1, 1], [3, 0, 2, 2]], jnp.int32)  # wrong tokens in pads
    tl = jnp.array([4, 2, 1], jnp.int32)
    loss = float(loss_fn(p, SRC, SRC_LEN, tgt, tl))
    assert loss == pytest.approx(0.0, abs=1e-6)
    # The same targets scored over their full width include the wrong padded tokens.
    assert float(loss_fn(p, SRC, SRC_LEN, tgt, jnp.array([4, 4, 4], jnp.int32))) > 10.0
    # One wrong last valid token costs the logit margin, averaged over the 7 valid tokens (a wrong
    # token earlier would also be fed to the next step and make that one wrong too).
    bad = tgt.at[1, 1].set(3)
    assert float(loss_fn(p, SRC, SRC_LEN, bad, tl)) == pytest.approx(100.0 / 7, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("style,attention", [("luong", "general"), ("bahdanau", "additive")])
def test_teacher_forcing_equals_python_loop_over_the_cell(style, attention):
    model = _model(attention, style)
    p = jax.jit(model.init)(jax.random.key(1))
    logits = np.asarray(jax.jit(model.logits)(p, SRC, SRC_LEN, TGT, TGT_LEN))
    enc = jax.jit(model.encode)(p, SRC, SRC_LEN)

    @jax.jit
    def one_step(p, enc, carry, prev):  # the cell's own step, called from a Python loop
        cell = model.decoder_cell(enc)
        x = jnp.take(p.target_embedding, prev, axis=0)
        carry, y = cell.step(p.decoder, carry, cell.project(p.decoder, x))
        return carry, y @ p.readout.w + p.readout.b

    carry = enc.carry
    prev = jnp.full((3,), BOS, jnp.int32)
    for t in range(TGT.shape[1]):
        carry, want = one_step(p, enc, carry, prev)
        want = np.asarray(want)
        valid = np.asarray(t < TGT_LEN)
        np.testing.assert_allclose(logits[valid, t], want[valid], rtol=2e-5, atol=2e-5)
        np.testing.assert_array_equal(logits[~valid, t], 0.0)
        prev = TGT[:, t]


@pytest.mark.slow
def test_padded_source_tokens_do_not_change_anything():
    model = _model("additive")
    p = jax.jit(model.init)(jax.random.key(2))
    src2 = jnp.where(jnp.arange(4) < SRC_LEN[:, None], SRC, 7)
    logits = jax.jit(model.logits)
    a = logits(p, SRC, SRC_LEN, TGT, TGT_LEN)
    b = logits(p, src2, SRC_LEN, TGT, TGT_LEN)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    w = np.asarray(jax.jit(model.attention_weights)(p, SRC, SRC_LEN, TGT, TGT_LEN))
    src_mask = np.arange(4) < np.asarray(SRC_LEN)[:, None]
    tgt_mask = np.arange(5) < np.asarray(TGT_LEN)[:, None]
    assert np.all(w[~src_mask[:, None, :].repeat(5, 1)] == 0.0)
    np.testing.assert_allclose(w.sum(-1)[tgt_mask], 1.0, rtol=1e-5)
    assert np.all(w.sum(-1)[~tgt_mask] == 0.0)


@pytest.mark.slow
def test_bridge_identity_when_carries_match_and_dense_otherwise():
    same = _model(None, encoder=jaxrnn.lstm(6), decoder=jaxrnn.lstm(6))  # and no attention
    p = jax.jit(same.init)(jax.random.key(3))
    assert p.bridge is None
    enc = jax.jit(same.encode)(p, SRC, SRC_LEN)
    xs = jnp.take(p.source_embedding, SRC, axis=0)
    final, _ = jax.jit(lambda p, xs: jaxrnn.run(jaxrnn.lstm(6), p, xs, lengths=SRC_LEN))(
        p.encoder, xs
    )
    assert enc.memory is None
    np.testing.assert_allclose(np.asarray(enc.carry.h), np.asarray(final.h), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(enc.carry.c), np.asarray(final.c), rtol=1e-6)
    # Without attention the decoder is the plain cell: logits are its readout, run by the engine.
    lg = jax.jit(same.logits)(p, SRC, SRC_LEN, TGT, TGT_LEN)
    xt = jnp.take(p.target_embedding, jnp.concatenate([jnp.full((3, 1), BOS), TGT[:, :-1]], 1), 0)
    _, ys = jax.jit(lambda p, x, c: jaxrnn.run(jaxrnn.lstm(6), p, x, carry=c, lengths=TGT_LEN))(
        p.decoder, xt, enc.carry
    )
    want = np.where(np.asarray(jaxrnn.sequence_mask(TGT_LEN, 5))[..., None],
                    np.asarray(ys @ p.readout.w + p.readout.b), 0.0)
    np.testing.assert_allclose(np.asarray(lg), want, rtol=1e-5, atol=1e-6)
    differ = _model(encoder=jaxrnn.stacked([jaxrnn.bidirectional(jaxrnn.lstm(5)), jaxrnn.gru(7)]))
    # bi-LSTM(5) + GRU(7) into LSTM(6): carry leaves 5+5+5+5+7 -> 6+6
    assert jax.eval_shape(differ.init, jax.random.key(3)).bridge.w.shape == (27, 12)
    none = _model(bridge=False)
    pn = jax.eval_shape(none.init, jax.random.key(3))
    assert pn.bridge is None


@pytest.mark.slow
def test_scheduled_sampling_with_probability_one_follows_greedy_decoding():
    model = _model("general")
    p = jax.jit(model.init)(jax.random.key(4))
    full = jnp.full((3,), 5, jnp.int32)
    lg = jax.jit(lambda p, k: model.logits(p, SRC, SRC_LEN, TGT, full, sampling_prob=1.0, key=k))(
        p, jax.random.key(0)
    )
    fed = np.asarray(jnp.argmax(lg, -1))
    g = jax.jit(lambda p: model.greedy(p, SRC, SRC_LEN, max_len=5))(p)
    for b in range(3):
        n = int(g.lengths[b])
        np.testing.assert_array_equal(fed[b, :n], np.asarray(g.tokens[b, :n]))


@pytest.mark.slow
def test_loss_gradients_match_finite_differences():
    model = _model("additive", "bahdanau", decoder=jaxrnn.gru(4),
                   encoder=jaxrnn.bidirectional(jaxrnn.elman(3)))
    p = jax.jit(model.init)(jax.random.key(5))
    emb = p.target_embedding

    @jax.jit
    def f(dec, emb):
        return model.loss(p._replace(decoder=dec, target_embedding=emb), SRC, SRC_LEN, TGT,
                          TGT_LEN)

    check_grads(f, (p.decoder, emb), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


def test_bad_inputs_raise_clear_errors():
    model = _model()
    p = jax.eval_shape(model.init, jax.random.key(0))  # every check runs before params are used
    with pytest.raises(TypeError, match="src: expected integer"):
        model.loss(p, SRC.astype(jnp.float32), SRC_LEN, TGT, TGT_LEN)
    with pytest.raises(ValueError, match=r"src_lengths: expected shape \(3,\)"):
        model.loss(p, SRC, SRC_LEN[:2], TGT, TGT_LEN)
    with pytest.raises(ValueError, match="tgt: ids must lie in"):
        model.loss(p, SRC, SRC_LEN, TGT.at[0, 0].set(9), TGT_LEN)
    with pytest.raises(ValueError, match="tgt_lengths: values must lie"):
        model.loss(p, SRC, SRC_LEN, TGT, TGT_LEN.at[0].set(6))
    with pytest.raises(ValueError, match="src: expected int token ids of shape"):
        model.loss(p, SRC[0], SRC_LEN, TGT, TGT_LEN)
    with pytest.raises(ValueError, match="key: scheduled sampling"):
        model.loss(p, SRC, SRC_LEN, TGT, TGT_LEN, sampling_prob=0.5)
    with pytest.raises(ValueError, match="sampling_prob"):
        model.loss(p, SRC, SRC_LEN, TGT, TGT_LEN, sampling_prob=1.5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="eos: expected a token id"):
        _model(eos=5)
    with pytest.raises(TypeError, match="decoder: expected a jaxrnn Cell"):
        encoder_decoder(source_vocab=4, target_vocab=4, embed_size=2, encoder=jaxrnn.lstm(2),
                        decoder="lstm")
    with pytest.raises(ValueError, match="style"):
        _model(style="bengio")
    with pytest.raises(ValueError, match="attention: this model has no attention"):
        m = _model(None)
        m.attention_weights(jax.eval_shape(m.init, jax.random.key(0)), SRC, SRC_LEN, TGT, TGT_LEN)


# --------------------------------------------------------------------------- PER / WER

def test_edit_distance_by_hand():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["AH"]) == 1
    assert edit_distance(["K", "AE", "T"], ["K", "AE", "T"]) == 0
    assert edit_distance(["K", "AE", "T"], ["K", "T"]) == 1  # one deletion
    assert edit_distance(["K", "AE", "T"], ["T", "AE", "K"]) == 2  # two substitutions
    assert edit_distance("abc", "") == 3


def test_error_rates_by_hand():
    refs = [["K", "AE", "T"], ["D", "AO", "G"], [["T", "AH", "M", "EY", "T", "OW"],
                                                 ["T", "AH", "M", "AA", "T", "OW"]]]
    hyps = [["K", "AE", "T"], ["D", "AA", "G", "Z"], ["T", "AH", "M", "AA", "T", "OW"]]
    r = error_rates(refs, hyps)
    # edits: 0 + 2 + 0 (second variant matches) over lengths 3 + 3 + 6; one word of three wrong
    assert r["token_error_rate"] == pytest.approx(2 / 12)
    assert r["sequence_error_rate"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="hypotheses: expected 3"):
        error_rates(refs, hyps[:2])


# --------------------------------------------------------------------------- g2p task helpers

def test_g2p_split_is_by_word_and_seeded():
    from jaxrnn.tasks.g2p import split_words

    words = [f"w{i}" for i in range(100)] + ["w1", "w2"]  # duplicates collapse to one word
    train, test = split_words(words, test_size=10, train_size=None, seed=3)
    assert len(test) == 10 and len(train) == 90 and not set(train) & set(test)
    assert (train, test) == split_words(words, test_size=10, train_size=None, seed=3)
    assert split_words(words, test_size=10, train_size=20, seed=3)[0] == train[:20]


def test_g2p_batches_append_eos_and_use_buckets():
    from jaxrnn.tasks.g2p import EOS as G2P_EOS
    from jaxrnn.tasks.g2p import Vocabs, pad_batch

    v = Vocabs("abc'", ["K", "AE"])
    src, sl, tgt, tl = pad_batch([(v.encode_word("cab"), [4, 3]), (v.encode_word("a"), [3])])
    assert src.shape == tgt.shape == (2, 10)  # the smallest bucket that fits
    np.testing.assert_array_equal(sl, [3, 1])
    np.testing.assert_array_equal(tl, [3, 2])
    np.testing.assert_array_equal(tgt[0, :4], [4, 3, G2P_EOS, 0])
    assert v.decode_phonemes([4, 3, G2P_EOS, 4]) == ["K", "AE"]
    with pytest.raises(ValueError, match="text: 'ab1' has characters outside"):
        v.encode_word("ab1")


def test_g2p_generate_without_weights_says_how_to_train(tmp_path):
    # the single-file .npz reader is gone (issue 25: one store); the model directory says it
    import argparse

    from jaxrnn.tasks.g2p import load_run

    args = argparse.Namespace(out=str(tmp_path / "run"), model=None)
    with pytest.raises(FileNotFoundError, match=r"--model: .* \(train first\): run "
                                                r"`jaxrnn train --task g2p`"):
        load_run(args)
