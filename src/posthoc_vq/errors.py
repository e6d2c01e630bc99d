"""User-facing errors.

Every error a user can cause (bad config, missing or corrupt data, a damaged
checkpoint, a diverging run) is a :class:`PosthocVQError`. Its message names the
file or key at fault and says what to do. The CLI prints the message and exits 2
instead of showing a traceback.
"""


class PosthocVQError(Exception):
    """Base class of errors caused by input, not by a bug."""


class ConfigError(PosthocVQError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DatasetError(PosthocVQError):
    """A dataset is missing, corrupt, or cannot be downloaded."""


class CheckpointError(PosthocVQError):
    """A checkpoint or artifact file is missing, truncated or inconsistent."""


class TrainingError(PosthocVQError):
    """Training cannot continue (for example a NaN or infinite loss)."""


class LockedError(PosthocVQError):
    """Another process is writing the same run directory or sweep folder."""


class ExecutorError(PosthocVQError):
    """A sweep executor cannot start (for example a Ray cluster address that does not answer or refuses the token)."""
