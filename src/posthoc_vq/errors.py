"""User-facing errors, and the exit code of each.

Every error a user can cause (bad config, missing or corrupt data, a damaged
checkpoint, a diverging run) is a :class:`PosthocVQError`. Its message names the
file or key at fault and says what to do. The CLI prints the message to stderr
instead of a traceback and exits with :func:`exit_code` of the error:

* **2**, a usage or input error: fix the command line or the files it names
  (argparse's own errors, :class:`ConfigError`, a bad name, a run, codebook or file
  that does not exist (:class:`NotFoundError`), data that is missing or unreadable
  (:class:`DatasetError`), an extra that is not installed, a model that breaks the
  autoencoder contract, a run that never trained (:class:`UntrainedRunError`));
* **1**, failed work: the command was right but the work did not succeed (a
  training that diverged (:class:`TrainingError`), a damaged or inconsistent
  checkpoint or artifact (:class:`CheckpointError`), a run another process is
  writing (:class:`LockedError`), an executor that cannot run the sweep
  (:class:`ExecutorError`), a sweep whose cells failed, an unexpected exception);
* **0**, success.

:data:`EXIT_CODES` is the one table: the most specific class of an error's MRO that
is listed there decides.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # failed work
EXIT_USAGE = 2  # usage or input error (argparse also exits 2)


class PosthocVQError(Exception):
    """Base class of errors caused by input, not by a bug."""


class ConfigError(PosthocVQError):
    """A config file or override is invalid (unknown key, wrong type, bad value)."""


class DatasetError(PosthocVQError):
    """A dataset is missing, corrupt, or cannot be downloaded."""


class CheckpointError(PosthocVQError):
    """A checkpoint or artifact file is missing, truncated or inconsistent."""


class NotFoundError(CheckpointError):
    """A run, codebook, packed-weight file or other path the user named does not exist (or is not what was asked for).

    A :class:`CheckpointError` (``except CheckpointError`` still catches it) whose cause is the command line, not damage: exit 2.
    """


class TrainingError(PosthocVQError):
    """Training cannot continue (for example a NaN or infinite loss)."""


class UntrainedRunError(TrainingError):
    """The run named has never trained (zero optimiser steps): measuring or packing its random weights means nothing (exit 2)."""


class LockedError(PosthocVQError):
    """Another process is writing the same run directory or sweep folder."""


class ExecutorError(PosthocVQError):
    """A sweep executor cannot start (for example a Ray cluster address that does not answer or refuses the token)."""


class MissingExtraError(PosthocVQError):
    """An optional dependency is not installed; the message names the extra that installs it (:func:`posthoc_vq.extras.require`)."""


#: exit code per error class; the first class of an error's MRO found here wins (so a subclass may differ from its base)
EXIT_CODES: dict[type[BaseException], int] = {
    PosthocVQError: EXIT_USAGE,  # anything else of ours is about the input (a subclass defined elsewhere, e.g. a model contract error)
    ConfigError: EXIT_USAGE,
    DatasetError: EXIT_USAGE,
    NotFoundError: EXIT_USAGE,
    UntrainedRunError: EXIT_USAGE,
    MissingExtraError: EXIT_USAGE,
    CheckpointError: EXIT_FAILED,
    TrainingError: EXIT_FAILED,
    LockedError: EXIT_FAILED,
    ExecutorError: EXIT_FAILED,
}


def exit_code(err: BaseException) -> int:
    """The process exit code for ``err`` (:data:`EXIT_CODES`); 1 for an exception that is not a :class:`PosthocVQError` (a bug)."""
    for cls in type(err).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return EXIT_FAILED
