"""Bit-accurate integer model of the row-streaming TSE unit: configuration, numerics,
streaming model, numba kernels and golden-vector export. Never imports torch."""
from .config import DEFAULT, ConfigError, TSEConfig, parse_tile

__all__ = ["DEFAULT", "ConfigError", "TSEConfig", "parse_tile"]
