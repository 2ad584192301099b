"""Classic networks beyond gated cells: echo state networks, Hopfield networks (binary and
modern), bidirectional associative memory, recursive (tree) networks and the neural history
compressor. Each is a set of pure functions over plain pytrees; whatever is recurrent over time
runs on the common scan engine :func:`jaxrnn.run`."""

from jaxrnn.classic import bam, compressor, esn, hopfield, recursive
from jaxrnn.classic.bam import BAMResult
from jaxrnn.classic.compressor import Compressed, compress, masked, passed_fraction, surprise_mask
from jaxrnn.classic.esn import (
    GeneratorState,
    Readout,
    ReservoirParams,
    ReservoirState,
    closed_loop,
    drive,
    features,
    fit_readout,
    generate,
    nrmse,
    predict,
    reservoir,
    spectral_radius,
)
from jaxrnn.classic.hopfield import (
    RecallResult,
    hebbian,
    modern_energy,
    modern_recall,
    modern_update,
    recall_async,
    recall_sync,
)
from jaxrnn.classic.mackey_glass import mackey_glass
from jaxrnn.classic.recursive import RecursiveNet, RecursiveParams, Trees, pack_trees, recursive_net

__all__ = [
    "reservoir",
    "ReservoirParams",
    "ReservoirState",
    "Readout",
    "GeneratorState",
    "spectral_radius",
    "drive",
    "features",
    "fit_readout",
    "predict",
    "closed_loop",
    "generate",
    "nrmse",
    "mackey_glass",
    "hopfield",
    "bam",
    "RecallResult",
    "hebbian",
    "recall_sync",
    "recall_async",
    "modern_update",
    "modern_recall",
    "modern_energy",
    "BAMResult",
    "recursive",
    "recursive_net",
    "RecursiveNet",
    "RecursiveParams",
    "Trees",
    "pack_trees",
    "esn",
    "compressor",
    "Compressed",
    "surprise_mask",
    "compress",
    "masked",
    "passed_fraction",
]
