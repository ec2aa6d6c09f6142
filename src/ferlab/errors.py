"""User-facing errors: each carries a one-line message saying what is wrong and where."""


class FerlabError(Exception):
    """An error the user can act on; the CLI prints its message on one line and exits with 2."""


class DataError(FerlabError):
    """A data set, split, file or annotation is missing or malformed."""


class ModelError(FerlabError):
    """An unknown model, missing weights, or a checkpoint that does not fit."""


class ConfigError(FerlabError):
    """A configuration value or file is invalid."""


class OutputError(FerlabError):
    """An output file or folder cannot be written (read-only, full, or not a folder)."""


class DivergedError(FerlabError):
    """Training's loss stopped being a finite number; nothing is exported from such a run."""


def os_error_line(exc: OSError, where: object = None) -> str:
    """``<where>: <problem>`` for an OSError, e.g. ``out/metrics.json: read-only file system``;
    without ``where``, the file the error names."""
    name = where if where is not None else exc.filename
    problem = (exc.strerror or str(exc) or type(exc).__name__).lower()
    return f"{name}: {problem}" if name is not None else problem
