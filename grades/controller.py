"""Drives a stopping method during training and applies what it decides.

Used by both training front ends — our own loop (:mod:`grades.train`) and the
Hugging Face callback (:mod:`grades.callback`) — so freezing, stopping, events and
the signal history behave the same in both.

Distributed training (an initialised ``torch.distributed`` process group with more
than one rank): every rank runs the method on its own. A method whose inputs are summed
over ranks (``rank_consistent``: GradES, whose signals over sharded parameters take one
all-reduce per check, and AutoFreeze) computes the same decision on every rank, which is
applied as is; for any other method the decision applied is rank 0's, broadcast to all
(:func:`grades.distributed.agree`). All ranks therefore freeze the same matrices at the
same step and stop at the same step. The hooks must be called at the same steps on every
rank (they are, in lockstep training). A method that cannot read sharded parameters
(``supports_sharding`` false) is refused when the model is sharded.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import torch

from .components import Component, discover_components
from .coverage import coverage
from .freezer import Freezer
from .io import atomic_write_json, atomic_write_text
from .methods.base import Decision, MethodContext, StoppingMethod
from .shards import mesh_of


class Controller:
    def __init__(self, model: torch.nn.Module, optimizer, method: StoppingMethod, planned_steps: int,
                 components: list[Component] | None = None, savings=None) -> None:
        self.model = model
        self.method = method
        self.components = components if components is not None else discover_components(model)
        if not method.supports_sharding and mesh_of([p for c in self.components for p in c.params]) is not None:
            raise ValueError(f"method '{method.name}' cannot read sharded (FSDP) parameters; run it in one process "
                             "without sharding (parallel: none)")
        self.freezer = Freezer(self.components, optimizer)
        self.planned_steps = planned_steps
        self.should_stop = False
        self.stop_reason: str | None = None
        self.stop_step: int | None = None
        # every weight matrix in the blocks accounted for; GradES refuses untracked ones unless allowed
        self.coverage = coverage(model, self.components)
        logging.getLogger(__name__).info("%d components track %.1f%% of the blocks' weight-matrix parameters%s",
                                         len(self.components), 100 * self.coverage.share,
                                         "" if self.coverage.complete else "; " + self.coverage.describe())
        method.bind(MethodContext(model, self.components, planned_steps, self.freezer.frozen, self.coverage))
        # optional savings beyond a plain freeze (grades.savings): applied after every freeze decision
        self.savings = None
        if savings is not None:
            from .savings import Savings, SavingsConfig

            scfg = savings if isinstance(savings, SavingsConfig) else SavingsConfig.from_dict(savings)
            if scfg.any:
                self.savings = Savings(model, self.components, scfg, optimizer)

    def set_optimizer(self, optimizer) -> None:
        self.freezer.optimizer = optimizer
        if self.savings is not None:
            self.savings.set_optimizer(optimizer)

    # ----------------------------------------------------------------- hooks
    def before_optimizer_step(self, step: int) -> bool:
        return self._apply(self.method.before_optimizer_step(step), step)

    def after_optimizer_step(self, step: int, loss: float | None = None) -> bool:
        return self._apply(self.method.after_optimizer_step(step, loss), step)

    def on_validation(self, step: int, val_loss: float) -> bool:
        return self._apply(self.method.on_validation(step, val_loss), step)

    def on_skipped_step(self, step: int) -> None:
        """A step whose loss or gradients were not finite was skipped (``nan_policy: skip``).

        The method never saw its gradients; a method with an optional ``on_skipped_step``
        hook (GradES) drops what the gap makes stale. Never freezes or stops."""
        hook = getattr(self.method, "on_skipped_step", None)
        if hook is not None:
            hook(step)

    def _apply(self, decision: Decision | None, step: int) -> bool:
        # plain training never decides anything, and a rank-consistent method decides the
        # same everywhere: nothing to agree on
        if self.method.name != "none" and not self.method.rank_consistent:
            from .distributed import agree

            decision = agree(decision)
        if decision is None:
            return self.should_stop
        if decision.freeze:
            for i in decision.freeze:
                self.freezer.freeze(i, step, decision.values.get(i, float("nan")), decision.taus.get(i, float("nan")),
                                   reason=decision.freeze_reason)
            hook = getattr(self.method, "on_freeze", None)
            if hook is not None:
                hook(decision.freeze)
            if self.savings is not None:
                self.savings.sync(self.freezer.frozen)
        if decision.stop and not self.should_stop:
            self.should_stop = True
            self.stop_reason = decision.reason or "stopped by method"
            self.stop_step = step
        return self.should_stop

    # -------------------------------------------------------------- outputs
    @property
    def events(self):
        return self.freezer.events

    def signal_rows(self):
        """Long-format rows (step, component, layer, kind, type, tower, value)."""
        comps = self.components
        for step, values in self.method.signal_history():
            for c, v in zip(comps, values.tolist()):
                yield (step, c.name, c.layer, c.kind, c.type, c.tower, v)

    def signals_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["step", "component", "layer", "kind", "type", "tower", "value"])
        for row in self.signal_rows():
            w.writerow(row[:-1] + (f"{row[-1]:.6g}",))
        return buf.getvalue()

    def events_csv(self) -> str:
        buf = io.StringIO()
        cols = ["step", "component", "layer", "kind", "type", "tower", "params", "signal", "tau", "reason"]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for e in self.events:
            w.writerow(e.record())
        return buf.getvalue()

    def summary(self) -> dict:
        return {
            **self.method.summary(),
            "components": len(self.components),
            "tracked_params": sum(c.numel for c in self.components),
            "coverage": self.coverage.record(),
            "frozen": self.freezer.n_frozen,
            "frozen_ratio": self.freezer.frozen_ratio,
            "frozen_param_ratio": self.freezer.frozen_param_ratio,
            "stopped": self.should_stop,
            "stop_reason": self.stop_reason,
            "stop_step": self.stop_step,
            "released_optimizer_bytes": self.freezer.released_optimizer_bytes,
            "first_freeze_step": min((e.step for e in self.events), default=None),
            **({"savings": self.savings.summary()} if self.savings is not None else {}),
        }

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write signals.csv, freeze_events.csv and grades_summary.json into out_dir."""
        out = Path(out_dir)
        paths = {
            "signals": atomic_write_text(out / "signals.csv", self.signals_csv()),
            "freeze_events": atomic_write_text(out / "freeze_events.csv", self.events_csv()),
            "summary": atomic_write_json(out / "grades_summary.json", self.summary()),
        }
        return paths

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"freezer": self.freezer.state_dict(), "method": self.method.state_dict(),
                "should_stop": self.should_stop, "stop_reason": self.stop_reason, "stop_step": self.stop_step}

    def restore_frozen(self, state: dict) -> None:
        """Re-apply the frozen set of a :meth:`state_dict` (the first part of :meth:`load_state_dict`).

        A checkpoint loader calls it before it gives the optimizer its state back, so that
        frozen matrices get none."""
        self.freezer.load_state_dict(state["freezer"])
        if self.savings is not None:  # re-apply merges / truncation / pruning for the restored frozen set
            self.savings.sync(self.freezer.frozen)

    def load_state_dict(self, state: dict) -> None:
        self.restore_frozen(state)
        self.method.load_state_dict(state["method"])
        self.should_stop = state["should_stop"]
        self.stop_reason = state["stop_reason"]
        self.stop_step = state["stop_step"]
