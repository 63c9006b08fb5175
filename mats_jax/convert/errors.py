"""The one error type converters raise, so callers can tell bad input from bugs."""


class ConversionError(ValueError):
    """Input that cannot be converted: missing, corrupt or unsupported files."""
