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

Saved model directory (written to a temporary directory beside it, then renamed into place, so
a failed save leaves the previous model at that path as it was):

* ``model.json``: format, the architecture config (:attr:`Model.config`, or a registered
  architecture's name and config: :func:`architecture`), the input size, a SHA-256 of the
  weights (every leaf's dtype, shape and bytes; Orbax itself checks no content);
* ``weights/``: the params' leaves in order, saved synchronously by Orbax
  (``StandardCheckpointHandler``: exact float bits in their dtype) and restored into the
  structure rebuilt from the config, so loading needs no code from the program that trained it.
  Directories of older versions hold ``weights.msgpack`` (``flax.serialization``) instead;
  :func:`load_model` still reads them;
* ``preprocessing.json`` and ``metrics.json``: whatever JSON the caller gives (a vocabulary,
  a scaler, the held-out metrics).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells import registry
from jaxrnn.cells.base import _ACTIVATIONS, check_key, check_positive_int
from jaxrnn.layers import (
    Layer,
    bidirectional,
    dense,
    dropout_layer,
    embedding,
    recurrent,
    stacked,
)
from jaxrnn.scan import sequence_mask

FORMAT = "jaxrnn.model/1"
_CONFIG_FILE, _WEIGHTS_FILE, _WEIGHTS_DIR = "model.json", "weights.msgpack", "weights"
_PREPROCESSING_FILE, _METRICS_FILE = "preprocessing.json", "metrics.json"


def _json_able(value, argname: str):
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{argname}: expected JSON-able values (str, numbers, bools, lists, "
                        f"dicts; dtypes by name, e.g. 'bfloat16'), got {value!r} ({e})") from None
    return value


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


_SPECS = {cls.__name__: cls for cls in (Embedding, RNN, Bidirectional, Dropout, Dense)}
LayerSpec = Embedding | RNN | Bidirectional | Dropout | Dense


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

class Model(NamedTuple):
    """A built model.

    Attributes:
      init: ``init(key, input_size_or_shape) -> params``: the feature size ``F`` (or an input
        shape ending with it, e.g. ``(T, F)``); ignored (``None`` is fine) after an Embedding.
      apply: ``apply(params, x, *, lengths=None, key=None, deterministic=True) -> outputs``:
        ``x (B, T, F)`` features or ``(B, T)`` ids; ``lengths (B,)`` valid steps at the start;
        a key for dropout when ``deterministic=False``. Outputs are ``(B, T, O)`` (zero at
        padded steps) or ``(B, O)`` when the model summarises.
      config: the architecture as a JSON-able dict (:func:`from_config` rebuilds it).
      layer: the underlying :func:`jaxrnn.stacked` layer.
      specs: the layer specs.
    """

    init: Any
    apply: Any
    config: dict
    layer: Layer
    specs: tuple

    @property
    def takes_ids(self) -> bool:
        return isinstance(self.specs[0], Embedding)

    @property
    def output_size(self) -> int | None:
        return self.layer.output_size

    @property
    def returns_sequences(self) -> bool:
        return not self.layer.summarises


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

    def init(key, input_size_or_shape=None):
        if not takes_ids:
            size = input_size_or_shape
            if isinstance(size, (tuple, list)):
                size = size[-1] if size else None
            input_size = check_positive_int(size, "input_size_or_shape")
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

    return Model(init, apply, json.loads(json.dumps(config)), layer, specs)


def from_config(config: Mapping) -> Model | ArchitectureModel:
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
    ``function(config) -> object with init(key) and apply`` must be importable in the loading
    process. Returns ``name``."""
    if not isinstance(name, str) or name.count(":") != 1 or not all(name.split(":")):
        raise ValueError(f"name: expected 'package.module:function', got {name!r}")
    _ARCHITECTURES.add(name)
    return name


class ArchitectureModel(NamedTuple):
    """A model built by a registered architecture (a network :func:`sequential` cannot
    express: an encoder-decoder, a ConvLSTM, ...).

    Attributes:
      init: ``init(key, input_size_or_shape=None) -> params`` (the size is ignored: the
        architecture's config fixes every shape).
      apply: the built network's ``apply`` (its own signature).
      config: ``{"format", "architecture": name, "config": {...}}`` (:func:`from_config`).
      built: what the builder returned (task-specific functions: decoding, sampling, ...).
    """

    init: Any
    apply: Any
    config: dict
    built: Any

    takes_ids = None  # unknown: the architecture decides


def architecture(name: str, config: Mapping) -> ArchitectureModel:
    """The model the registered builder ``name`` makes of ``config`` (a JSON-able dict)."""
    import importlib

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
    if not (callable(getattr(built, "init", None)) and callable(getattr(built, "apply", None))):
        raise TypeError(f"architecture: {name} returned {type(built).__name__}, expected an "
                        f"object with init(key) and apply")

    def init(key, input_size_or_shape=None):
        return built.init(check_key(key))

    return ArchitectureModel(init, built.apply,
                             {"format": FORMAT, "architecture": name, "config": config}, built)


def input_size_of(model: Model, params) -> int | None:
    """The feature size ``F`` the params were initialised for (None for a model of ids or of
    a registered architecture)."""
    if isinstance(model, ArchitectureModel) or model.takes_ids:
        return None
    for spec, p in zip(model.specs, params, strict=True):
        if isinstance(spec, RNN):
            return int(spec.make_cell().input_size(p))
        if isinstance(spec, Bidirectional):
            return int(spec.layer.make_cell().input_size(p.forward))
        if isinstance(spec, Dense):
            return int(jnp.shape(p.w)[0])
    raise ValueError("model: no layer with parameters; nothing to save")


# --------------------------------------------------------------------------- save and load

class SavedModel(NamedTuple):
    model: Model | ArchitectureModel
    params: Any
    preprocessing: dict | None
    metrics: dict | None


def _check_directory(directory) -> str:
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise TypeError(f"directory: expected a path (str or os.PathLike), got {directory!r}")
    return os.path.abspath(os.fspath(directory))


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


def _leaf_arrays(params) -> dict:
    import numpy as np

    return {f"a{i}": np.asarray(leaf)
            for i, leaf in enumerate(jax.tree_util.tree_leaves(jax.device_get(params)))}


def _digest(arrays: dict) -> str:
    """SHA-256 over every leaf's name, dtype, shape and bytes, in leaf order."""
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(arrays, key=lambda n: int(n[1:])):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.dtype.name}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _orbax_checkpointer():
    # Synchronous (no background thread outlives the save) and imported only when needed:
    # Orbax takes seconds to import.
    import orbax.checkpoint as ocp

    return ocp, ocp.Checkpointer(ocp.StandardCheckpointHandler())


def _save_weights(path: str, arrays: dict) -> None:
    """Write the leaves to the new directory ``path`` with Orbax."""
    ocp, ckptr = _orbax_checkpointer()
    try:
        ckptr.save(path, args=ocp.args.StandardSave(arrays))
    finally:
        ckptr.close()


def _restore_weights(path: str) -> dict:
    import numpy as np

    ocp, ckptr = _orbax_checkpointer()
    try:
        restored = ckptr.restore(path, args=ocp.args.StandardRestore())
    finally:
        ckptr.close()
    return {str(k): np.asarray(v) for k, v in dict(restored).items()}


def _file_digests(root: str) -> dict:
    """SHA-256 of every file under ``root``, by its path relative to ``root``."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            full = os.path.join(d, f)
            h = hashlib.sha256()
            with open(full, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
            out[os.path.relpath(full, root)] = h.hexdigest()
    return dict(sorted(out.items()))


def _write(path: str, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_model(directory, model: Model, params, *, preprocessing: dict | None = None,
               metrics: dict | None = None) -> str:
    """Save ``model`` (architecture), ``params`` and the caller's ``preprocessing`` and
    ``metrics`` dicts to ``directory`` atomically; returns the directory's absolute path.

    An existing directory is replaced only if it holds a saved model (``model.json``); a save
    that fails leaves it as it was.
    """
    target = _check_directory(directory)
    if not isinstance(model, (Model, ArchitectureModel)):
        raise TypeError(f"model: expected a jaxrnn.models.Model (from sequential, "
                        f"architecture or from_config), got {type(model).__name__}")
    for argname, value in (("preprocessing", preprocessing), ("metrics", metrics)):
        if value is not None:
            if not isinstance(value, Mapping):
                raise TypeError(f"{argname}: expected a dict or None, got "
                                f"{type(value).__name__}")
            _json_able(dict(value), argname)
    input_size = input_size_of(model, params)
    _check_params(model, params, input_size)
    if os.path.exists(target) and not (
        os.path.isdir(target)
        and (os.path.isfile(os.path.join(target, _CONFIG_FILE)) or not os.listdir(target))
    ):
        raise ValueError(f"directory: {target!r} exists and is not a saved model (no "
                         f"{_CONFIG_FILE}); refusing to replace it")

    arrays = _leaf_arrays(params)
    header = {
        "format": FORMAT,
        "config": model.config,
        "input_size": input_size,
        "weights": _WEIGHTS_DIR,
        "weights_sha256": _digest(arrays),
    }
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        _save_weights(os.path.join(tmp, _WEIGHTS_DIR), arrays)
        # Every file Orbax wrote, checked before Orbax reads them back: a damaged file then
        # never reaches TensorStore, whose failed reads can finish after Orbax's event loop
        # has closed (an error raised later, in whatever code runs then).
        header["weights_files"] = _file_digests(os.path.join(tmp, _WEIGHTS_DIR))
        for fname, value in ((_PREPROCESSING_FILE, preprocessing), (_METRICS_FILE, metrics)):
            if value is not None:
                _write(os.path.join(tmp, fname), json.dumps(dict(value), indent=1).encode())
        # written last: a directory with model.json is complete
        _write(os.path.join(tmp, _CONFIG_FILE), json.dumps(header, indent=1).encode())
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.rename(target, os.path.join(old, name))
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _read_json(directory: str, fname: str, required: bool):
    path = os.path.join(directory, fname)
    if not os.path.isfile(path):
        if required:
            raise FileNotFoundError(f"directory: {directory!r} has no {fname}; not a jaxrnn "
                                    f"saved model (jaxrnn.models.save_model writes one)")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"directory: {fname} in {directory!r} is corrupt ({e})") from None


def _load_orbax_weights(source: str, header: dict, template):
    import numpy as np

    wpath = os.path.join(source, _WEIGHTS_DIR)
    if not os.path.isdir(wpath):
        raise FileNotFoundError(f"directory: {source!r} has no {_WEIGHTS_DIR}/ (the weights)")
    files = header.get("weights_files")  # absent in saves made before it was recorded
    if files is not None:
        found = _file_digests(wpath)
        for rel, digest in files.items():
            if found.get(rel) != digest:
                why = ("is missing" if rel not in found
                       else f"differs from its SHA-256 in {_CONFIG_FILE}")
                raise ValueError(f"directory: {_WEIGHTS_DIR}/ in {source!r} is corrupt (its file "
                                 f"{rel} {why})")
    try:
        arrays = _restore_weights(wpath)
    except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many kinds when damaged
        raise ValueError(f"directory: {_WEIGHTS_DIR}/ in {source!r} is corrupt or incomplete "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    if _digest(arrays) != header.get("weights_sha256"):
        raise ValueError(f"directory: {_WEIGHTS_DIR}/ in {source!r} is corrupt (its SHA-256 "
                         f"differs from the one in {_CONFIG_FILE})")
    leaves = jax.tree_util.tree_leaves(template)
    if len(arrays) != len(leaves):
        raise ValueError(f"directory: {_WEIGHTS_DIR}/ in {source!r} holds {len(arrays)} arrays "
                         f"where the saved architecture has {len(leaves)}")
    out = []
    for i, t in enumerate(leaves):
        v = arrays[f"a{i}"]
        if v.shape != t.shape or np.dtype(v.dtype) != np.dtype(t.dtype):
            raise ValueError(f"directory: {_WEIGHTS_DIR}/ in {source!r} holds a leaf "
                             f"{v.dtype}{list(v.shape)} where the architecture has "
                             f"{t.dtype}{list(t.shape)}")
        out.append(jnp.asarray(v))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), out)


def _load_msgpack_weights(source: str, header: dict, template):
    """The weights of a directory an older version saved (``weights.msgpack``)."""
    from flax import serialization

    wpath = os.path.join(source, _WEIGHTS_FILE)
    if not os.path.isfile(wpath):
        raise FileNotFoundError(f"directory: {source!r} has no {_WEIGHTS_DIR}/ or "
                                f"{_WEIGHTS_FILE} (the weights)")
    with open(wpath, "rb") as f:
        weights = f.read()
    if hashlib.sha256(weights).hexdigest() != header.get("weights_sha256"):
        raise ValueError(f"directory: {_WEIGHTS_FILE} in {source!r} is corrupt (its SHA-256 "
                         f"differs from the one in {_CONFIG_FILE})")
    try:
        state = serialization.msgpack_restore(weights)
        restored = serialization.from_state_dict(template, state)
    except Exception as e:  # noqa: BLE001 - any decoding failure is a corrupt file
        raise ValueError(f"directory: {_WEIGHTS_FILE} in {source!r} does not match the saved "
                         f"architecture ({type(e).__name__}: {e})") from None
    leaves = jax.tree_util.tree_leaves(template)
    params = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(template),
        [jnp.asarray(v, t.dtype) for v, t in zip(jax.tree_util.tree_leaves(restored), leaves,
                                                 strict=True)],
    )
    for v, t in zip(jax.tree_util.tree_leaves(params), leaves, strict=True):
        if v.shape != t.shape:
            raise ValueError(f"directory: {_WEIGHTS_FILE} in {source!r} holds a leaf of shape "
                             f"{v.shape} where the architecture has {t.shape}")
    return params


def load_model(directory) -> SavedModel:
    """The model, params, preprocessing and metrics saved by :func:`save_model` in
    ``directory``; rebuilt from the saved config alone."""
    source = _check_directory(directory)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"directory: no saved model at {source!r} "
                                f"({'not a directory' if os.path.exists(source) else 'missing'})")
    header = _read_json(source, _CONFIG_FILE, required=True)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else header
        raise ValueError(f"directory: {_CONFIG_FILE} in {source!r} is not format {FORMAT!r} "
                         f"(got {got!r})")
    model = from_config(header.get("config"))
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), header.get("input_size")))
    if header.get("weights") == _WEIGHTS_DIR:
        params = _load_orbax_weights(source, header, template)
    else:
        params = _load_msgpack_weights(source, header, template)
    return SavedModel(model, params, _read_json(source, _PREPROCESSING_FILE, False),
                      _read_json(source, _METRICS_FILE, False))


__all__ = [
    "Model", "SavedModel", "sequential", "from_config", "save_model", "load_model",
    "input_size_of", "Embedding", "RNN", *SHORTCUTS, "Bidirectional", "Dropout", "Dense",
    "FORMAT", "ArchitectureModel",
    "architecture", "register_architecture",
]
