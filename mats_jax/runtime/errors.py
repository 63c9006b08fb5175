"""The base of every error that means "bad input" rather than "bug"."""


class InputError(ValueError):
    """A file, key or value the user gave that cannot be used. Commands report it as one line
    naming the culprit and exit non-zero; anything else keeps its traceback."""


class RunError(RuntimeError):
    """A run that cannot go on through no fault of the code: a checkpoint that cannot be
    written, a workdir another trainer holds. Reported as one line, like InputError."""
