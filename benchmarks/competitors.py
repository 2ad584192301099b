"""Builders of one benchmark step per library: jaxrnn and its peers.

Every builder returns a :class:`Runner` whose ``call()`` runs one step (forward over the whole
sequence, or one training step: forward + dense readout + MSE over all steps + backward + Adam
with learning rate 1e-3) and blocks until the result is ready. All JAX programs are compiled
ahead of time with ``jax.jit(f).lower(...).compile()`` so that the first-call cost and XLA's
planned memory (``memory_analysis()``: arguments + outputs + temporaries) are read the same way
for every JAX library. Peers are optional: a missing package raises :class:`PeerMissing`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxrnn
from benchmarks.configs import Config

LEARNING_RATE = 1e-3


class PeerMissing(RuntimeError):
    """The peer library is not installed (or lacks the requested cell)."""


@dataclass
class Runner:
    lib: str
    call: Callable[[], None]
    compile_s: float | None  # trace + lower + compile (JAX); None for eager libraries
    mem_bytes: int | None  # XLA's planned buffers of the step program; None where unknown
    note: str = ""


def data(cfg: Config, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg.batch, cfg.T, cfg.features)).astype(np.float32)
    y = rng.standard_normal((cfg.batch, cfg.T, cfg.out)).astype(np.float32)
    return x, y


def _planned_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes
        )
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def aot_runner(lib: str, fn, state, *consts, train: bool, note: str = "",
               compiler_options=None, execute: bool = True) -> Runner:
    """Compile ``fn(state, *consts)`` ahead of time. In training mode ``fn`` returns
    ``(new_state, loss)`` and the state is threaded through the calls, as in a training loop."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(state, *consts).compile(compiler_options=compiler_options)
    compile_s = time.perf_counter() - t0  # trace + lower + XLA compile, no execution
    if not execute:  # only the compiled program's planned memory is wanted
        return Runner(lib, None, compile_s, _planned_bytes(compiled), note)
    out = compiled(state, *consts)
    jax.block_until_ready(out)
    box = [out[0] if train else state]

    if train:

        def call():
            new_state, loss = compiled(box[0], *consts)
            loss.block_until_ready()
            box[0] = new_state
    else:

        def call():
            jax.block_until_ready(compiled(box[0], *consts))

    return Runner(lib, call, compile_s, _planned_bytes(compiled), note)


def adam_step(loss_fn):
    """``step((params, opt_state), x, y) -> ((params, opt_state), loss)`` with Adam."""
    opt = optax.adam(LEARNING_RATE)

    def step(state, x, y):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step, opt


def _mse(pred, y):
    return jnp.mean((pred - y) ** 2)


# --------------------------------------------------------------------------- jaxrnn

def jaxrnn_runner(make_cell, cfg: Config, mode: str, *, run_kwargs=None, lib="jaxrnn",
                  run_fn=None, compiler_options=None, execute: bool = True) -> Runner:
    run_kwargs = dict(run_kwargs or {})
    run_fn = jaxrnn.run if run_fn is None else run_fn
    cell = make_cell(cfg.hidden)
    k1, k2 = jax.random.split(jax.random.key(1))
    readout = jaxrnn.dense(cfg.out)
    params = (cell.init(k1, cfg.features), readout.init(k2, cell.output_size))
    x, y = (jnp.asarray(a) for a in data(cfg))

    def forward(p, x):
        _, hs = run_fn(cell, p[0], x, **run_kwargs)
        return hs

    if mode == "forward":
        return aot_runner(lib, forward, params, x, train=False,
                          compiler_options=compiler_options, execute=execute)

    def loss(p, x, y):
        return _mse(readout.apply(p[1], forward(p, x)), y)

    step, opt = adam_step(loss)
    return aot_runner(lib, step, (params, opt.init(params)), x, y, train=True,
                      compiler_options=compiler_options, execute=execute)


def jaxrnn_step_flops(make_cell, cfg: Config) -> float:
    """FLOPs of one forward step of the cell over the batch, as XLA counts them."""
    cell = make_cell(cfg.hidden)
    p = cell.init(jax.random.key(0), cfg.features)
    c = cell.initial_carry(p, (cfg.batch,))
    x = jnp.zeros((cfg.batch, cfg.features))
    f = jax.jit(lambda p, c, x: cell.step(p, c, cell.project(p, x)))
    cost = f.lower(p, c, x).compile().cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost.get("flops", 0.0))


# --------------------------------------------------------------------------- Flax (linen)

def _flax_jordan_cell(nn):
    """A Jordan cell as a Flax user writes one (Flax has none): an ``nn.RNNCellBase`` built
    the way Flax builds ``SimpleCell``, with the readout inside the step because the context
    fed back is the output. Same equations and sizes as ``jaxrnn.jordan(H, H)``: ``h = tanh(x
    W + b + y_prev U)``, ``y = tanh(h V + c)``."""

    class JordanCell(nn.RNNCellBase):
        features: int

        @nn.compact
        def __call__(self, carry, x):
            h = jnp.tanh(nn.Dense(self.features, name="i")(x)
                         + nn.Dense(self.features, use_bias=False, name="h")(carry))
            y = jnp.tanh(nn.Dense(self.features, name="o")(h))
            return y, y

        @nn.nowrap
        def initialize_carry(self, rng, input_shape):
            return jnp.zeros((*input_shape[:-1], self.features))

        @property
        def num_feature_axes(self) -> int:
            return 1

    return JordanCell


def flax_runner(family: str, cfg: Config, mode: str) -> Runner:
    try:
        import flax.linen as nn
    except ImportError as e:
        raise PeerMissing("flax not installed") from e
    cells = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell,
             "jordan": _flax_jordan_cell(nn)}
    cell_cls = cells[family]

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.RNN(cell_cls(cfg.hidden))(x)
            return h, nn.Dense(cfg.out)(h)

    model = Model()
    x, y = (jnp.asarray(a) for a in data(cfg))
    params = model.init(jax.random.key(1), x)
    if mode == "forward":
        return aot_runner("flax", lambda p, x: model.apply(p, x)[0], params, x, train=False)
    step, opt = adam_step(lambda p, x, y: _mse(model.apply(p, x)[1], y))
    return aot_runner("flax", step, (params, opt.init(params)), x, y, train=True)


# --------------------------------------------------------------------------- Equinox

def equinox_runner(family: str, cfg: Config, mode: str) -> Runner:
    try:
        import equinox as eqx
    except ImportError as e:
        raise PeerMissing("equinox not installed") from e
    cells = {"lstm": getattr(eqx.nn, "LSTMCell", None), "gru": getattr(eqx.nn, "GRUCell", None)}
    if cells.get(family) is None:
        raise PeerMissing(f"equinox has no {family} cell")
    k1, k2 = jax.random.split(jax.random.key(1))
    model = (cells[family](cfg.features, cfg.hidden, key=k1),
             eqx.nn.Linear(cfg.hidden, cfg.out, key=k2))
    arrays, static = eqx.partition(model, eqx.is_array)
    x, y = (jnp.asarray(a) for a in data(cfg))
    is_lstm = family == "lstm"

    def forward(arr, x):
        cell, lin = eqx.combine(arr, static)
        h0 = jnp.zeros((cfg.batch, cfg.hidden))
        carry0 = (h0, h0) if is_lstm else h0

        def body(carry, x_t):  # the Equinox cell is unbatched: vmap over the batch
            new = jax.vmap(cell)(x_t, carry)
            return new, (new[0] if is_lstm else new)

        _, hs = jax.lax.scan(body, carry0, jnp.swapaxes(x, 0, 1))
        hs = jnp.swapaxes(hs, 0, 1)
        return hs, jax.vmap(jax.vmap(lin))(hs)

    if mode == "forward":
        return aot_runner("equinox", lambda a, x: forward(a, x)[0], arrays, x, train=False)
    step, opt = adam_step(lambda a, x, y: _mse(forward(a, x)[1], y))
    return aot_runner("equinox", step, (arrays, opt.init(arrays)), x, y, train=True)


# --------------------------------------------------------------------------- Keras 3 (JAX)

def keras_runner(family: str, cfg: Config, mode: str) -> Runner:
    import os

    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        raise PeerMissing("KERAS_BACKEND is not jax")
    os.environ["KERAS_BACKEND"] = "jax"
    try:
        import keras
    except ImportError as e:
        raise PeerMissing("keras not installed") from e
    if keras.backend.backend() != "jax":
        raise PeerMissing(f"keras runs on {keras.backend.backend()}, not jax")
    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}
    if family not in layer:
        raise PeerMissing(f"keras has no {family} layer")
    inp = keras.Input((cfg.T, cfg.features), batch_size=cfg.batch)
    h = layer[family](cfg.hidden, return_sequences=True)(inp)
    model = keras.Model(inp, [h, keras.layers.Dense(cfg.out)(h)])
    tv = [jnp.asarray(v.value) for v in model.trainable_variables]
    ntv = [jnp.asarray(v.value) for v in model.non_trainable_variables]
    x, y = (jnp.asarray(a) for a in data(cfg))

    def outputs(tv, x):
        (hs, pred), _ = model.stateless_call(tv, ntv, x)
        return hs, pred

    if mode == "forward":
        return aot_runner("keras", lambda tv, x: outputs(tv, x)[0], tv, x, train=False)
    step, opt = adam_step(lambda tv, x, y: _mse(outputs(tv, x)[1], y))
    return aot_runner("keras", step, (tv, opt.init(tv)), x, y, train=True)


# --------------------------------------------------------------------------- PyTorch CPU

TORCH_THREADS = 2
# PyTorch's own OpenMP default (spinning) unless BENCH_TORCH_OMP_WAIT_POLICY says otherwise:
# PASSIVE rescues PyTorch on an oversubscribed machine but halves its training speed on a quiet
# one (config A LSTM training 43k vs ~95k tokens/s), so it is opt-in and stated in the report.
TORCH_OMP_WAIT_POLICY = os.environ.get("BENCH_TORCH_OMP_WAIT_POLICY")


def _torch_step(family: str, cfg: Config, mode: str):
    """One PyTorch step as a closure (runs in the PyTorch worker process)."""
    import torch

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(1)
    rnn_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[family]
    rnn = rnn_cls(cfg.features, cfg.hidden, batch_first=True)
    lin = torch.nn.Linear(cfg.hidden, cfg.out)
    xn, yn = data(cfg)
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    if mode == "forward":

        def call():
            with torch.inference_mode():
                rnn(x)
    else:
        params = list(rnn.parameters()) + list(lin.parameters())
        opt = torch.optim.Adam(params, lr=LEARNING_RATE)

        def call():
            opt.zero_grad(set_to_none=True)
            hs, _ = rnn(x)
            loss = torch.mean((lin(hs) - y) ** 2)
            loss.backward()
            opt.step()

    return call


def torch_inprocess_runner(family: str, cfg: Config, mode: str) -> Runner:
    """PyTorch in this process: for a worker that runs PyTorch alone (:mod:`benchmarks.libworker`),
    where no JAX thread pool competes with its OpenMP threads."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise PeerMissing("torch not installed")
    if family not in ("lstm", "gru", "rnn"):
        raise PeerMissing(f"torch has no {family} module")
    call = _torch_step(family, cfg, mode)
    call()
    return Runner("torch", call, None, None,
                  f"{TORCH_THREADS} threads, OMP_WAIT_POLICY="
                  f"{os.environ.get('OMP_WAIT_POLICY') or 'unset'}, own process")


def _torch_worker(conn, family, cfg_fields, mode):
    """Serve timed PyTorch steps over a pipe: each request runs one step, replies its seconds."""
    call = _torch_step(family, Config(*cfg_fields), mode)
    call()
    conn.send("ready")
    try:
        while conn.recv() == "call":
            t0 = time.perf_counter()
            call()
            conn.send(time.perf_counter() - t0)
    except EOFError:  # the harness dropped this runner: done
        pass
    conn.close()


def torch_runner(family: str, cfg: Config, mode: str) -> Runner:
    """PyTorch runs in its own process, stepped in lock-step with the JAX libraries (one step
    per request, timed inside that process). In the same process as JAX its OpenMP threads and
    XLA's thread pool fight over the 2 cores: measured up to 100x slower steps."""
    import importlib.util
    import multiprocessing as mp

    if importlib.util.find_spec("torch") is None:
        raise PeerMissing("torch not installed")
    if family not in ("lstm", "gru", "rnn"):
        raise PeerMissing(f"torch has no {family} module")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_torch_worker, args=(child, family, tuple(cfg), mode), daemon=True)
    # Optionally OpenMP threads that sleep instead of spinning while idle (see NOTES.md).
    old = os.environ.get("OMP_WAIT_POLICY")
    if TORCH_OMP_WAIT_POLICY:
        os.environ["OMP_WAIT_POLICY"] = TORCH_OMP_WAIT_POLICY
    try:
        proc.start()
    finally:
        if old is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = old
    if parent.recv() != "ready":
        raise RuntimeError("torch worker did not start")

    def call():
        parent.send("call")
        return parent.recv()

    return Runner("torch", call, None, None,
                  f"{TORCH_THREADS} threads, OMP_WAIT_POLICY={TORCH_OMP_WAIT_POLICY or 'unset'}, "
                  "own process")


PEERS = {
    "flax": flax_runner,
    "equinox": equinox_runner,
    "keras": keras_runner,
    "torch": torch_runner,
}
