"""Fault injection for the tests: hooks the training loop calls, no-ops unless a test asks for a fault.

The loop calls the hooks of the :class:`Faults` object it is given at three points of a
step; :data:`NO_FAULTS` (the default) does nothing there. :func:`faults_from_env` builds
the injecting one from environment variables, read once per run by :func:`grades.train.run`:

    ``GRADES_TEST_KILL_AT_STEP=N``      SIGKILL the process after step N (after its checkpoint)
    ``GRADES_TEST_FAIL_AT_STEP=N``      raise an error after step N
    ``GRADES_TEST_NAN_AT_STEP=N,M``     make the loss (and so every gradient) of those steps NaN
    ``GRADES_TEST_INF_GRAD_AT_STEP=N``  put +inf in one gradient of step N (the loss stays finite)
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

import torch

from ..config import ConfigError
from ..shards import local

KINDS = ("kill", "fail", "nan", "inf_grad")


def env_var(kind: str) -> str:
    return f"GRADES_TEST_{kind.upper()}_AT_STEP"


class Faults:
    """The hooks of a normal run: none of them changes anything."""

    def on_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The (micro-batch) loss about to be back-propagated."""
        return loss

    def on_gradients(self, step: int, params: list[torch.nn.Parameter]) -> None:
        """The summed gradients of the live parameters, before they are checked for NaN/Inf."""

    def after_step(self, step: int) -> None:
        """The step is done (applied or skipped, checkpointed when due)."""


NO_FAULTS = Faults()


@dataclass(frozen=True)
class InjectedFaults(Faults):
    """Faults at the given steps: NaN loss, +inf gradient, an exception, or SIGKILL."""

    kill: frozenset[int] = frozenset()
    fail: frozenset[int] = frozenset()
    nan: frozenset[int] = frozenset()
    inf_grad: frozenset[int] = frozenset()

    def on_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if step in self.nan else loss

    def on_gradients(self, step: int, params: list[torch.nn.Parameter]) -> None:
        if step in self.inf_grad and params:
            g = local(params[0].grad)  # this rank's shard when sharded
            if g.numel():
                g.view(-1)[0] = float("inf")

    def after_step(self, step: int) -> None:
        if step in self.kill:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if step in self.fail:
            raise RuntimeError(f"failure injected after step {step} (GRADES_TEST_FAIL_AT_STEP)")


def env_steps(name: str) -> frozenset[int]:
    """The step numbers in environment variable ``name`` (comma-separated; empty when unset)."""
    raw = os.environ.get(name, "").strip()
    try:
        return frozenset(int(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{name} = {raw!r}: expected step numbers separated by commas") from None


def faults_from_env() -> Faults:
    """:class:`InjectedFaults` from the ``GRADES_TEST_*_AT_STEP`` variables; :data:`NO_FAULTS` when none is set."""
    steps = {k: env_steps(env_var(k)) for k in KINDS}
    return InjectedFaults(**steps) if any(steps.values()) else NO_FAULTS
