"""GradES: freeze each weight matrix once its signal drops below tau.

Decision rule, checked every ``check_interval`` optimizer steps ``t``:

    freeze component c  iff  t >= ceil(alpha * T)  and  signal_c(t) < tau_tower(c)

where ``signal`` is ||G_t - G_{t-1}||_1 (default), ||G_t||_1 or ||W_t - W_{t-k}||_1,
optionally divided by the matrix's size; an undefined (first delta) or non-finite
signal never counts as converged. Frozen matrices stay frozen. Training stops when the
frozen fraction of components reaches ``max_frozen_ratio``.

Gradient signals are read in ``before_optimizer_step`` (after accumulation and
clipping); the weight signal in ``after_optimizer_step``, like the released code.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from ..config import GradESConfig
from ..coverage import check_coverage, coverage
from ..signals import SignalTracker
from .base import Decision, MethodContext, StoppingMethod


class GradES(StoppingMethod):
    name = "grades"
    rank_consistent = True  # signals are summed over ranks (grades.signals): every rank decides the same
    default_signal: str | None = None  # subclasses (registry aliases) change the default signal

    def __init__(self, config: GradESConfig | None = None, **params) -> None:
        if config is None and self.default_signal is not None and "signal" not in params:
            params = {**params, "signal": self.default_signal}
        self.config = config if config is not None else GradESConfig.from_dict(params, where=f"method '{self.name}'")
        self._history: list[tuple[int, torch.Tensor]] = []
        self.checks = 0
        self.skipped_steps = 0

    @classmethod
    def config_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(GradESConfig)]

    def bind(self, ctx: MethodContext) -> None:
        super().bind(ctx)
        cfg = self.config
        # every weight matrix in the blocks tracked, or explicitly allowed not to be (grades.coverage)
        cov = ctx.coverage if ctx.coverage is not None else coverage(ctx.model, ctx.components)
        check_coverage(cov, cfg.allow_untracked, who=f"method '{self.name}'")
        if not cov.complete:
            warnings.warn(f"method '{self.name}' (allow_untracked: true): {cov.describe()}", stacklevel=2)
        self.tracker = SignalTracker(ctx.components, cfg.signal, normalize=cfg.normalize,
                                     buffer_dtype=cfg.buffer_dtype, sample_fraction=cfg.sample_fraction,
                                     seed=cfg.seed)
        self.taus = torch.tensor([cfg.tau_for(c.tower) for c in ctx.components], dtype=torch.float64)
        self.grace = cfg.grace_steps(ctx.planned_steps)

    # ----------------------------------------------------------------- hooks
    def before_optimizer_step(self, step: int) -> Decision | None:
        if self.config.signal == "weight_delta_l1":
            return None
        k = self.config.check_interval
        active = [not f for f in self.ctx.frozen]
        if step % k == 0:
            values = self.tracker.measure(active, update_buffer=(k == 1))
            return self._decide(step, values)
        if k > 1 and (step + 1) % k == 0:
            self.tracker.record(active)  # G_{t-1} for the next check
        return None

    def after_optimizer_step(self, step: int, loss: float | None = None) -> Decision | None:
        if self.config.signal != "weight_delta_l1" or step % self.config.check_interval:
            return None
        values = self.tracker.measure([not f for f in self.ctx.frozen])
        return self._decide(step, values)

    def _decide(self, step: int, values: torch.Tensor) -> Decision:
        self.checks += 1
        if self.config.record_signals:
            self._history.append((step, values.to(torch.float32)))
        frozen = torch.tensor(self.ctx.frozen, dtype=torch.bool)
        decision = Decision()
        if step >= self.grace:
            converged = torch.isfinite(values) & (values < self.taus) & ~frozen
            idx = converged.nonzero().flatten().tolist()
            decision.freeze = idx
            decision.values = {i: float(values[i]) for i in idx}
            decision.taus = {i: float(self.taus[i]) for i in idx}
        n_frozen = int(frozen.sum()) + len(decision.freeze)
        if n_frozen / max(1, len(self.ctx.components)) >= self.config.max_frozen_ratio - 1e-12:
            decision.stop = True
            decision.reason = "all components frozen" if n_frozen == len(self.ctx.components) else \
                f"frozen ratio reached max_frozen_ratio={self.config.max_frozen_ratio}"
        return decision

    def on_skipped_step(self, step: int) -> None:
        """A non-finite step was skipped: its gradient was never measured nor stored.

        The previous-gradient buffers (and weight snapshots) now predate a gap, so they
        are dropped: the next check yields NaN (never converged) and refills them. A
        NaN therefore never leads to a freeze, neither directly nor through a stale delta."""
        self.tracker.clear()
        self.skipped_steps += 1

    def on_freeze(self, indices: list[int]) -> None:
        for i in indices:
            self.tracker.release(i)

    # -------------------------------------------------------------- outputs
    def signal_history(self) -> list[tuple[int, torch.Tensor]]:
        return self._history

    def summary(self) -> dict:
        return {"method": self.name, "config": self.config.to_dict(), "grace_steps": self.grace,
                "checks": self.checks, "skipped_steps": self.skipped_steps,
                "signal_state_bytes": self.tracker.buffer_bytes()}

    def state_dict(self) -> dict:
        return {"tracker": self.tracker.state_dict(), "checks": self.checks, "skipped_steps": self.skipped_steps,
                "history": [(s, v.clone()) for s, v in self._history]}

    def load_state_dict(self, state: dict) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.checks = state["checks"]
        self.skipped_steps = state.get("skipped_steps", 0)
        self._history = [(s, v.clone()) for s, v in state["history"]]


class GradESV1(GradES):
    """``grades-v1``: GradES with the paper v1 signal ||G_t||_1 by default."""

    name = "grades-v1"
    default_signal = "grad_l1"


class GradESWeight(GradES):
    """``grades-weight``: GradES with the released code's signal ||W_t - W_{t-k}||_1 by default."""

    name = "grades-weight"
    default_signal = "weight_delta_l1"
