"""Moved to :mod:`jaxrnn.engine`; this module keeps the old import path working."""

from jaxrnn.engine.dispatch import run
from jaxrnn.engine.masking import last_valid, reverse_padded, sequence_mask
from jaxrnn.engine.validate import validate_inputs

__all__ = ["run", "last_valid", "sequence_mask", "reverse_padded", "validate_inputs"]
