"""The jaxrnn benchmark harness: ``python -m benchmarks [--quick] [--contended]`` (or
``nox -s bench``).

Measures every jaxrnn cell in two modes (forward over the whole sequence; a training step =
forward + readout + MSE over all steps + backward + Adam) against the peer libraries that happen
to be installed (Flax, Equinox, Keras 3 on JAX, PyTorch CPU), interleaved in one process so
machine drift hits every library alike, and reports ratios, quiet and (``--contended``) with a
competing busy process. ``python -m benchmarks.gpu``: the GPU comparison. See ``BENCHMARKS.md``
(one section per CPU model).
"""
