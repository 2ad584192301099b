"""Bridges to other libraries. Each submodule imports its peer lazily:

* :mod:`jaxrnn.interop.torch` -- PyTorch ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` weights in and out.

The Flax NNX modules live in :mod:`jaxrnn.nnx` (Flax is a core dependency).
"""
