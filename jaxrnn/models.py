"""A model builder as short as Keras' ``Sequential``, and saving a model with its architecture.

    >>> import jax, jax.numpy as jnp
    >>> from jaxrnn import models as M
    >>> model = M.sequential([M.Embedding(100, 32), M.LSTM(64, return_sequences=True),
    ...                       M.Bidirectional(M.GRU(32)), M.Dropout(0.2), M.Dense(10)])
    >>> params = model.init(jax.random.key(0), None)          # ids have no feature size
    >>> logits = model.apply(params, jnp.ones((4, 12), jnp.int32), lengths=jnp.array([12, 5, 3, 1]))
    >>> logits.shape
    (4, 10)
    >>> M.save_model("runs/my-model", model, params, metrics={"accuracy": 0.9})
    >>> saved = M.load_model("runs/my-model")     # in any process: no code needed to rebuild it

Each layer spec (:class:`Embedding`, :class:`RNN` and its shortcuts :func:`LSTM`, :func:`GRU`,
..., :class:`Bidirectional`, :class:`Dropout`, :class:`Dense`) is plain JSON-able data; the
recurrent ones name a cell of the registry (:mod:`jaxrnn.cells.registry`), so every registered
cell can be used (``M.RNN("mgu", 64)``). :func:`sequential` builds them into one
:func:`jaxrnn.stacked` layer of the common protocol (:mod:`jaxrnn.layers`).

As in Keras, a recurrent layer returns each sequence's last valid output unless
``return_sequences=True``; a bidirectional one merges the forward direction's last valid output
with the backward direction's output at step 0. Sequence outputs are zero at padded steps.

:func:`save_model` writes a model directory (:mod:`jaxrnn.io.model_dir`: ``model.json`` with
the architecture config (:attr:`Model.config`, or a registered architecture's name and config:
:func:`architecture`), the input size, the caller's preprocessing and metrics, and the weights'
table; the weights themselves written by Orbax in a versioned subdirectory). :func:`load_model`
rebuilds the model from the config alone, so loading needs no code from the program that
trained it, and sees one save whole even while another process saves.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells import registry
from jaxrnn.cells.base import _ACTIVATIONS, check_key, check_positive_int
from jaxrnn.engine import sequence_mask
from jaxrnn.io import model_dir
from jaxrnn.layers import (
    Layer,
    bidirectional,
    dense,
    dropout_layer,
    embedding,
    recurrent,
    stacked,
)
from jaxrnn.train.models import Model

FORMAT = "jaxrnn.model/1"  # of a model's config (the directory's format: jaxrnn.io.model_dir)
_json_able = model_dir.json_able  # one check and message for every JSON-able argument


def _check_bool(value, argname):
    if not isinstance(value, bool):
        raise TypeError(f"{argname}: expected a bool, got {type(value).__name__} {value!r}")
    return value


# --------------------------------------------------------------------------- layer specs

@dataclasses.dataclass(frozen=True)
class Embedding:
    """Integer ids ``(B, T)`` -> vectors ``(B, T, features)``; must come first."""

    vocab_size: int
    features: int

    def __post_init__(self):
        check_positive_int(self.vocab_size, "vocab_size")
        check_positive_int(self.features, "features")

    def build(self) -> Layer:
        return embedding(self.vocab_size, self.features)


@dataclasses.dataclass(frozen=True)
class RNN:
    """A recurrent layer of registered cell ``cell`` (a name of :mod:`jaxrnn.cells.registry`)
    with ``units`` outputs. ``cell_options`` go to the cell's factory (JSON values: dtypes by
    name). ``input_dropout`` / ``recurrent_dropout``: variational, as :func:`jaxrnn.recurrent`."""

    cell: str
    units: int
    return_sequences: bool = False
    reverse: bool = False
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    unroll: int = 1
    cell_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        registry.get(self.cell)
        check_positive_int(self.units, "units")
        _check_bool(self.return_sequences, "return_sequences")
        _check_bool(self.reverse, "reverse")
        check_positive_int(self.unroll, "unroll")
        if not isinstance(self.cell_options, Mapping):
            raise TypeError(f"cell_options: expected a dict, got {self.cell_options!r}")
        object.__setattr__(self, "cell_options", dict(self.cell_options))
        _json_able(self.cell_options, "cell_options")
        self.build()  # the cell's and the layer's own argument checks, now rather than at init

    def make_cell(self):
        return registry.make(self.cell, self.units, **self.cell_options)

    def build(self, *, reverse: bool | None = None, return_sequences: bool | None = None):
        return recurrent(
            self.make_cell(),
            reverse=self.reverse if reverse is None else reverse,
            input_dropout=self.input_dropout,
            recurrent_dropout=self.recurrent_dropout,
            unroll=self.unroll,
            return_sequences=self.return_sequences if return_sequences is None
            else return_sequences,
        )


def _shortcut(cell_name: str, class_name: str):
    def make(units: int, *, return_sequences: bool = False, reverse: bool = False,
             input_dropout: float = 0.0, recurrent_dropout: float = 0.0, unroll: int = 1,
             **cell_options) -> RNN:
        return RNN(cell_name, units, return_sequences, reverse, input_dropout,
                   recurrent_dropout, unroll, cell_options)

    make.__name__ = make.__qualname__ = class_name
    make.__doc__ = (f"``RNN({cell_name!r}, units, ...)``: {registry.get(cell_name).doc}; "
                    f"other keywords go to the cell's factory.")
    return make


# ``LSTM(64)`` is ``RNN("lstm", 64)``: one shortcut per registered cell that the builder can
# make from a width (``LSTM``, ``GRU``, ``Elman``, ``Jordan``, ``MinGRU``, ...), generated from
# the registry; ``SimpleRNN`` is Keras' name for the Elman net.
SHORTCUTS = {e.class_name: _shortcut(e.name, e.class_name) for e in registry.REGISTRY.values()
             if e.class_name and e.cli and e.inputs == "features"}
SHORTCUTS["SimpleRNN"] = _shortcut("elman", "SimpleRNN")
globals().update(SHORTCUTS)


@dataclasses.dataclass(frozen=True)
class Bidirectional:
    """``layer`` forwards and a copy of it (own parameters) reversed, merged by ``merge``
    (``concat``, ``sum``, ``mean``); ``layer.return_sequences`` decides the output as in Keras."""

    layer: RNN
    merge: str = "concat"

    def __post_init__(self):
        if not isinstance(self.layer, RNN):
            raise TypeError(f"layer: expected a recurrent layer spec (e.g. jaxrnn.models."
                            f"LSTM(32)), got {type(self.layer).__name__}")
        if self.layer.reverse:
            raise ValueError("layer: give the forward layer (reverse=False); Bidirectional "
                             "builds the reversed copy")
        self.build()

    def build(self) -> Layer:
        fw = self.layer.build(return_sequences=True)
        bw = self.layer.build(reverse=True, return_sequences=True)
        return bidirectional(fw, bw, merge=self.merge,
                             return_sequences=self.layer.return_sequences)


@dataclasses.dataclass(frozen=True)
class Dropout:
    """Inverted dropout in training (``deterministic=False`` with a key)."""

    rate: float

    def __post_init__(self):
        dropout_layer(self.rate)

    def build(self) -> Layer:
        return dropout_layer(self.rate)


@dataclasses.dataclass(frozen=True)
class Dense:
    """``activation(x W + b)`` with ``units`` outputs; ``activation`` by name or None."""

    units: int
    activation: str | None = None

    def __post_init__(self):
        check_positive_int(self.units, "units")
        if self.activation is not None and self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation: expected None or one of {sorted(_ACTIVATIONS)}, got "
                             f"{self.activation!r}")

    def build(self) -> Layer:
        act = None if self.activation is None else _ACTIVATIONS[self.activation]
        return dense(self.units, activation=act)


_NORMALIZATION_EPSILON = 1e-7  # Keras' backend.epsilon(): the smallest standard deviation


def _floats(values, argname: str) -> tuple[float, ...]:
    import numpy as np

    try:
        arr = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{argname}: expected a list of numbers, got {values!r}") from None
    if arr.ndim != 1 or not arr.size or not np.isfinite(arr).all():
        raise ValueError(f"{argname}: expected a non-empty list of finite numbers (one per "
                         f"feature), got {values!r}")
    # stored as the float32 values the model computes with, so a saved config is exact
    return tuple(float(v) for v in arr.astype(np.float32))


@dataclasses.dataclass(frozen=True)
class Normalization:
    """``(x - mean) / max(sqrt(variance), 1e-7)`` per feature, as Keras' ``Normalization``:
    the statistics are part of the model (its config, saved and loaded with it; never
    trained), so the scaler cannot be lost or applied twice. Make one from training data with
    :meth:`adapt`; it reads ``(B, T, F)`` features (not ids)."""

    mean: tuple[float, ...] | None = None
    variance: tuple[float, ...] | None = None

    def __post_init__(self):
        if (self.mean is None) != (self.variance is None):
            raise ValueError("mean, variance: give both or neither (adapt() computes them)")
        if self.mean is not None:
            mean, var = _floats(self.mean, "mean"), _floats(self.variance, "variance")
            if len(mean) != len(var):
                raise ValueError(f"mean, variance: expected one of each per feature, got "
                                 f"{len(mean)} and {len(var)}")
            if min(var) < 0:
                raise ValueError(f"variance: expected values >= 0, got {min(var)}")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "variance", var)

    def adapt(self, x, lengths=None) -> Normalization:
        """A Normalization with the mean and (population) variance of each feature of ``x``
        over every valid step: ``x`` an array ``(N, T, F)`` (``lengths (N,)``: valid steps at
        the start) or a list of ``(T_i, F)`` sequences."""
        import numpy as np

        if isinstance(x, (list, tuple)):
            rows = [np.asarray(s, np.float64) for s in x]
            if not rows or any(r.ndim != 2 for r in rows):
                raise ValueError("x: expected a non-empty list of (T_i, F) sequences")
            steps = np.concatenate(rows, axis=0)
        else:
            arr = np.asarray(x, np.float64)
            if arr.ndim != 3:
                raise ValueError(f"x: expected (N, T, F) features, got shape {arr.shape}")
            if lengths is None:
                steps = arr.reshape(-1, arr.shape[-1])
            else:
                lengths = np.asarray(lengths)
                if lengths.shape != arr.shape[:1]:
                    raise ValueError(f"lengths: expected shape {arr.shape[:1]}, got "
                                     f"{lengths.shape}")
                steps = arr[np.arange(arr.shape[1])[None, :] < lengths[:, None]]
        if not len(steps) or not np.isfinite(steps).all():
            raise ValueError("x: expected at least one step of finite values to adapt to")
        return Normalization(tuple(steps.mean(0)), tuple(steps.var(0)))

    def build(self) -> Layer:
        if self.mean is None:
            raise ValueError("Normalization: not adapted; use Normalization().adapt(x_train) "
                             "(or give mean and variance)")
        mean = jnp.asarray(self.mean, jnp.float32)
        scale = jnp.maximum(jnp.sqrt(jnp.asarray(self.variance, jnp.float32)),
                            _NORMALIZATION_EPSILON)
        size = len(self.mean)

        def init(key, input_size=None):
            if input_size is not None and input_size != size:
                raise ValueError(f"input_size: Normalization was adapted to {size} features, "
                                 f"got {input_size}")
            return ()

        def apply(params, x, *, lengths=None, key=None, deterministic=True):
            if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
                raise ValueError(f"x: Normalization reads float features, got "
                                 f"{jnp.asarray(x).dtype}")
            return ((x - mean) / scale).astype(x.dtype)

        return Layer(init, apply, None)


_SPECS = {cls.__name__: cls for cls in (Normalization, Embedding, RNN, Bidirectional, Dropout,
                                        Dense)}
LayerSpec = Normalization | Embedding | RNN | Bidirectional | Dropout | Dense


def _spec_config(spec) -> dict:
    cfg = {}
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        cfg[f.name] = _spec_config(v) if dataclasses.is_dataclass(v) else v
    return {"class_name": type(spec).__name__, "config": cfg}


def _spec_from_config(item, where: str):
    if (not isinstance(item, Mapping) or item.get("class_name") not in _SPECS
            or not isinstance(item.get("config"), Mapping)):
        raise ValueError(f"config: {where} must be {{'class_name': one of {sorted(_SPECS)}, "
                         f"'config': {{...}}}}, got {item!r}")
    cls, kw = _SPECS[item["class_name"]], dict(item["config"])
    if cls is Bidirectional:
        kw["layer"] = _spec_from_config(kw.get("layer"), f"{where}.layer")
    try:
        return cls(**kw)
    except TypeError as e:
        raise ValueError(f"config: {where}: {e}") from None


# --------------------------------------------------------------------------- the model

def sequential(layers: Sequence[LayerSpec]) -> Model:
    """Compose layer specs in order into a :class:`Model` (see the module docstring)."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layers: expected a non-empty list of layer specs, got {layers!r}")
    specs = tuple(layers)
    for i, s in enumerate(specs):
        if not isinstance(s, tuple(_SPECS.values())):
            raise TypeError(f"layers[{i}]: expected a layer spec ({', '.join(_SPECS)} or a "
                            f"shortcut such as LSTM), got {type(s).__name__}")
        if isinstance(s, Embedding) and i > 0:
            raise ValueError(f"layers[{i}]: an Embedding must be the first layer")
        if isinstance(s, Normalization):
            if i > 0:
                raise ValueError(f"layers[{i}]: a Normalization must be the first layer (it "
                                 f"scales the input features)")
            s.build()  # refuses an un-adapted one now, not at init
    summarised_at = None
    for i, s in enumerate(specs):
        recurrent_spec = isinstance(s, (RNN, Bidirectional))
        if recurrent_spec and summarised_at is not None:
            raise ValueError(
                f"layers[{i}]: a recurrent layer needs sequences but layers[{summarised_at}] "
                f"returns one vector per sequence; give it return_sequences=True")
        rs = s.layer.return_sequences if isinstance(s, Bidirectional) else getattr(
            s, "return_sequences", True)
        if recurrent_spec and not rs:
            summarised_at = i
    layer = stacked([s.build() for s in specs])
    config = {"format": FORMAT, "layers": [_spec_config(s) for s in specs]}
    takes_ids = isinstance(specs[0], Embedding)

    def init(key, input_spec=None):
        if not takes_ids:
            size = input_spec
            if isinstance(size, (tuple, list)):
                size = size[-1] if size else None
            input_size = check_positive_int(size, "input_spec")
        else:
            input_size = None
        return layer.init(check_key(key), input_size)

    def apply(params, x, *, lengths=None, key=None, deterministic=True):
        x = jnp.asarray(x)
        want = 2 if takes_ids else 3
        if x.ndim != want:
            what = "(B, T) integer ids" if takes_ids else "(B, T, F) features"
            raise ValueError(f"x: expected {what}, got shape {tuple(x.shape)}")
        ys = layer.apply(params, x, lengths=lengths, key=key, deterministic=deterministic)
        if lengths is not None and not layer.summarises:
            # the head ran on padded steps too (bias, activation): padding reads zero
            ys = jnp.where(sequence_mask(lengths, x.shape[1])[..., None], ys, 0).astype(ys.dtype)
        return ys

    return Model(init, apply, json.loads(json.dumps(config)), layer, specs,
                 takes_ids=takes_ids, preprocessing={})


def from_config(config: Mapping) -> Model:
    """The :class:`Model` described by ``config`` (:attr:`Model.config`, e.g. read from JSON)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise ValueError(f"config: expected format {FORMAT!r}, got {config.get('format')!r}")
    if "architecture" in config:
        return architecture(config["architecture"], config.get("config"))
    items = config.get("layers")
    if not isinstance(items, list) or not items:
        raise ValueError(f"config: 'layers' must be a non-empty list, got {items!r}")
    return sequential([_spec_from_config(it, f"layers[{i}]") for i, it in enumerate(items)])


# ------------------------------------------------------------- registered architectures

# Builders a saved model.json may name. Only these (and ones a program registers itself) are
# ever imported when loading: a file never gets to import an arbitrary module.
_ARCHITECTURES: set[str] = {
    f"jaxrnn.tasks.{task}:architecture"
    for task in ("digits", "fashion", "speech", "music", "memory", "g2p", "moving_digits",
                 "sentiment", "forecast")
}


def register_architecture(name: str) -> str:
    """Allow :func:`load_model` to rebuild models named ``"package.module:function"``;
    ``function(config) -> jaxrnn.models.Model`` must be importable in the loading
    process. Returns ``name``."""
    if not isinstance(name, str) or name.count(":") != 1 or not all(name.split(":")):
        raise ValueError(f"name: expected 'package.module:function', got {name!r}")
    _ARCHITECTURES.add(name)
    return name


def architecture(name: str, config: Mapping) -> Model:
    """The model the registered builder ``name`` makes of ``config`` (a JSON-able dict)."""
    import importlib

    if not isinstance(name, str):
        raise ValueError(f"architecture: expected the name of a registered builder, a string "
                         f"'package.module:function' (one of {sorted(_ARCHITECTURES)}), got "
                         f"{type(name).__name__} {name!r:.80}")
    if name not in _ARCHITECTURES:
        raise ValueError(f"architecture: {name!r} is not a registered architecture (one of "
                         f"{sorted(_ARCHITECTURES)}; jaxrnn.models.register_architecture adds "
                         f"one)")
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a dict for architecture {name!r}, got "
                        f"{type(config).__name__}")
    config = json.loads(json.dumps(dict(_json_able(dict(config), "config"))))
    module, attr = name.split(":")
    builder = getattr(importlib.import_module(module), attr, None)
    if not callable(builder):
        raise ValueError(f"architecture: {module} has no function {attr!r}")
    built = builder(config)
    if not isinstance(built, Model):
        raise TypeError(f"architecture: {name} returned {type(built).__name__}, expected a "
                        f"jaxrnn.models.Model")

    def init(key, input_spec=None):
        return built.init(check_key(key), input_spec)

    return built._replace(init=init, config={"format": FORMAT, "architecture": name,
                                             "config": config},
                          built=built if built.built is None else built.built,
                          preprocessing={})


def input_size_of(model: Model, params) -> int | None:
    """The feature size ``F`` the params were initialised for (None for a model of ids or of
    a registered architecture)."""
    if not model.specs or model.takes_ids:
        return None
    for spec, p in zip(model.specs, params, strict=True):
        if isinstance(spec, Normalization):
            return len(spec.mean)
        if isinstance(spec, RNN):
            return int(spec.make_cell().input_size(p))
        if isinstance(spec, Bidirectional):
            return int(spec.layer.make_cell().input_size(p.forward))
        if isinstance(spec, Dense):
            return int(jnp.shape(p.w)[0])
    raise ValueError("model: no layer with parameters; nothing to save")


# --------------------------------------------------------------------------- save and load

class SavedModel(NamedTuple):
    model: Model
    params: Any
    preprocessing: dict | None
    metrics: dict | None


def _check_params(model: Model, params, input_size):
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), input_size))
    want, got = jax.tree_util.tree_structure(template), jax.tree_util.tree_structure(params)
    if want != got:
        raise ValueError(f"params: expected the structure of the model's params {want}, "
                         f"got {got}")
    for path, e, g in zip(jax.tree_util.tree_leaves_with_path(template),
                          jax.tree_util.tree_leaves(template), jax.tree_util.tree_leaves(params),
                          strict=True):
        if tuple(jnp.shape(g)) != tuple(e.shape):
            raise ValueError(f"params: leaf {jax.tree_util.keystr(path[0])} should have shape "
                             f"{tuple(e.shape)}, got {tuple(jnp.shape(g))}")
    return template


def save_model(directory, model: Model, params, *, preprocessing: dict | None = None,
               metrics: dict | None = None) -> str:
    """Save ``model`` (architecture), ``params`` and the caller's ``preprocessing`` and
    ``metrics`` dicts to the model directory ``directory`` (:mod:`jaxrnn.io.model_dir`:
    versioned, committed by one atomic rename, readable while it is saved, movable); returns
    its absolute path. Only process 0 of a multi-process run writes.

    An existing directory is replaced only if it holds a saved model (``model.json``); a save
    that fails leaves it as it was.
    """
    model_dir.check_path(directory)
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a jaxrnn.models.Model (from sequential, "
                        f"architecture or from_config), got {type(model).__name__}")
    input_size = input_size_of(model, params)
    _check_params(model, params, input_size)
    return model_dir.save(directory, config=model.config, input_size=input_size,
                          arrays=model_dir.leaf_arrays(params), preprocessing=preprocessing,
                          metrics=metrics)


def load_model(directory) -> SavedModel:
    """The model, params, preprocessing and metrics saved by :func:`save_model` in
    ``directory``, all of one save; rebuilt from the saved config alone."""
    saved = model_dir.load(directory)
    try:
        model = from_config(saved.config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"directory: model.json in {saved.directory!r}: {e}") from None
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), saved.input_size))
    params = model_dir.unflatten(saved.arrays, template, saved.directory)
    return SavedModel(model, params, saved.preprocessing, saved.metrics)


__all__ = [
    "Model", "SavedModel", "sequential", "from_config", "save_model", "load_model",
    "input_size_of", "Embedding", "RNN", *SHORTCUTS, "Bidirectional", "Dropout", "Dense",
    "Normalization", "FORMAT", "architecture", "register_architecture",
]
