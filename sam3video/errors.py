"""Errors that mean "the input is wrong", as opposed to a bug. The CLI prints them as one line, exit 2."""


class Sam3VideoError(Exception):
    """Base class of the errors sam3video raises on purpose."""


class InputError(Sam3VideoError, ValueError):
    """Bad user input: an image, prompt, box, video or path that cannot be used, and why."""


class CheckpointError(Sam3VideoError, RuntimeError):
    """A checkpoint that cannot be found, downloaded, read or loaded into the model, and what to do."""


class ConfigError(Sam3VideoError, ValueError):
    """A model or run config that cannot be read or holds a wrong key or value."""


class MissingDependencyError(Sam3VideoError, ImportError):
    """An optional package that a feature needs is not installed; the message says what to install."""


class OutputError(Sam3VideoError, OSError):
    """An output file that cannot be written (disk full, no permission ...): which file, and why.
    ``errno`` is that of the operating system's error."""
