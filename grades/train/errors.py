"""The error of a training run that ended without a result."""


class RunFailed(RuntimeError):
    """The run ended without a result (train_failed.json says why)."""
