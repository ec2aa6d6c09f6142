"""User-facing errors: each carries a one-line message saying what is wrong and where."""


class FerlabError(Exception):
    """An error the user can act on; the CLI prints its message on one line and exits with 2."""


class DataError(FerlabError):
    """A data set, split, file or annotation is missing or malformed."""


class ModelError(FerlabError):
    """An unknown model, missing weights, or a checkpoint that does not fit."""


class ConfigError(FerlabError):
    """A configuration value or file is invalid."""
