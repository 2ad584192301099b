"""Moved to :mod:`jaxrnn.engine.backends.fused`; this name stays for existing imports.

``jaxrnn.fused`` *is* that module (not a copy of its names), so code that swaps
``jaxrnn.fused.fused_scan`` for a variant (the benchmarks' levers) still reaches the engine.
"""

import sys

from jaxrnn.engine.backends import fused as _fused

sys.modules[__name__] = _fused
