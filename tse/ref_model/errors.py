"""The two kinds of error a user sees as one `tse: error: ...` line (never a traceback)."""


class ConfigError(ValueError):
    """A configuration value that is not allowed; names the field, the value, what is allowed."""


class InputError(ValueError):
    """Bad input data or files (shape, dtype, range, missing or changed file)."""
