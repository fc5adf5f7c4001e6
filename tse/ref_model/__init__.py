"""Bit-accurate integer model of the row-streaming TSE unit: configuration, numerics,
streaming model, numba kernels and golden-vector export. Never imports torch."""
from .config import DEFAULT, TSEConfig, parse_tile
from .errors import ConfigError, InputError

__all__ = ["DEFAULT", "ConfigError", "InputError", "TSEConfig", "parse_tile"]
