"""The package's digest as :mod:`jaxrnn.io` names it: :mod:`jaxrnn.digest` (one module, on the
lowest floor, so that the kernels' build cache uses it too)."""

from jaxrnn.digest import sha256_arrays, sha256_bytes, sha256_file

__all__ = ["sha256_bytes", "sha256_file", "sha256_arrays"]
