"""AutoFreeze (Liu et al., 2021): freeze a growing prefix of layers whose gradients settle.

Decision rule, checked every ``eval_every`` optimizer steps t (gradients are read in
``before_optimizer_step``: final, after accumulation and clipping):

1. per layer u (lowest first; see :func:`grades.methods.bottomk.layer_units`):
   n_u(t) = sum over the layer's components c of ||G_c||_2 (Frobenius norm of the
   component's gradient; weight + bias, or LoRA A + B). With ``accumulate`` the norms
   of every step since the previous evaluation are summed, as in the original, which
   accumulates the gradient norm over the interval; by default only the evaluation
   step is measured (one batched ``_foreach_norm`` and one host sync per evaluation).
2. relative change  r_u = |n_u(t) - n_u(t_prev)| / n_u(t_prev)  (undefined at the first
   evaluation, or if n_u(t_prev) is 0 / not finite: such a layer is never frozen).
3. threshold: with ``threshold_mode: percentile`` (default, the original's rule) thr is
   the ``threshold``-th percentile (linear interpolation) of r over the layers not yet
   frozen; with ``threshold_mode: value`` thr = ``threshold``.
4. from the lowest unfrozen layer upwards, freeze layer after layer while r_u < thr
   (strictly) — layers are only frozen as a prefix: a layer never freezes while one
   below it trains — and while the frozen share of components stays <= max_frozen_ratio.
   No freezing before step ceil(alpha * planned_steps).

Percentile mode never freezes the last trainable layer (its change is its own
percentile); training stops only if every component ends up frozen (value mode with
max_frozen_ratio = 1), with reason "all components frozen".

Defaults (our choice; the paper tunes them per task): eval_every = 50,
threshold = 50 (median, percentile mode), max_frozen_ratio = 0.75 (keep the top quarter
training, as AutoFreeze always fine-tunes the top of the network), alpha = 0,
accumulate = false. Signals written to signals.csv are r_u, repeated for each
component of layer u; the freeze event's signal is r_u and its tau is thr.
"""

from __future__ import annotations

import math

import torch

from ..config import closest
from ..shards import local, mesh_of, sum_over_ranks
from .base import Decision, MethodContext, StoppingMethod
from .bottomk import bad_param, is_number, layer_units

MODES = ("percentile", "value")


class AutoFreeze(StoppingMethod):
    name = "autofreeze"
    rank_consistent = True  # its norms are summed over ranks: every rank decides the same

    def __init__(self, eval_every: int = 50, threshold: float = 50.0, threshold_mode: str = "percentile",
                 max_frozen_ratio: float = 0.75, alpha: float = 0.0, accumulate: bool = False,
                 record_signals: bool = True) -> None:
        n = self.name
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise bad_param(n, "eval_every", eval_every, "an integer >= 1")
        if threshold_mode not in MODES:
            raise bad_param(n, "threshold_mode", threshold_mode, f"one of {list(MODES)}"
                                                                 f"{closest(str(threshold_mode), MODES)}")
        if threshold_mode == "percentile" and (not is_number(threshold) or not 0 <= threshold <= 100):
            raise bad_param(n, "threshold", threshold, "a percentile in [0, 100] (threshold_mode: percentile)")
        if threshold_mode == "value" and (not is_number(threshold) or threshold < 0):
            raise bad_param(n, "threshold", threshold, "a relative change >= 0 (threshold_mode: value)")
        if not is_number(max_frozen_ratio) or not 0 < max_frozen_ratio <= 1:
            raise bad_param(n, "max_frozen_ratio", max_frozen_ratio, "in (0, 1]")
        if not is_number(alpha) or not 0 <= alpha < 1:
            raise bad_param(n, "alpha", alpha, "in [0, 1): the grace period as a fraction of planned steps")
        for field, v in (("accumulate", accumulate), ("record_signals", record_signals)):
            if not isinstance(v, bool):
                raise bad_param(n, field, v, "true or false")
        self.eval_every, self.threshold, self.threshold_mode = eval_every, float(threshold), threshold_mode
        self.max_frozen_ratio, self.alpha, self.accumulate = float(max_frozen_ratio), float(alpha), accumulate
        self.record_signals = record_signals
        self.prev: torch.Tensor | None = None  # n_u at the previous evaluation (CPU float64)
        self.acc: torch.Tensor | None = None  # accumulated norms since then (device)
        self.evals = 0
        self._history: list[tuple[int, torch.Tensor]] = []

    # ------------------------------------------------------------------ setup
    def bind(self, ctx: MethodContext) -> None:
        super().bind(ctx)
        self.units = layer_units(ctx.components)
        n_comp = len(ctx.components)
        self.unit_of = [0] * n_comp
        for u, (_, idx) in enumerate(self.units):
            for i in idx:
                self.unit_of[i] = u
        self.params = [p for c in ctx.components for p in c.params]
        self.owner = [i for i, c in enumerate(ctx.components) for _ in c.params]
        self.grace = max(1, math.ceil(self.alpha * ctx.planned_steps))
        self.mesh = mesh_of(self.params)  # sharded parameters: norms summed over ranks

    # --------------------------------------------------------------- measure
    @torch.no_grad()
    def _layer_norms(self) -> torch.Tensor | None:
        """n_u for every layer, on the gradients' device (0 for layers without gradients)."""
        frozen = self.ctx.frozen
        sel = [j for j, p in enumerate(self.params) if not frozen[self.owner[j]] and p.grad is not None]
        if not sel:
            return None
        grads = [local(self.params[j].grad) for j in sel]  # this rank's shards when sharded
        dev = grads[0].device
        sq = torch.stack(torch._foreach_norm(grads, 2)).to(torch.float64).square()
        owner = torch.tensor([self.owner[j] for j in sel], dtype=torch.long, device=dev)
        comp = torch.zeros(len(self.ctx.components), dtype=torch.float64, device=dev).index_add_(0, owner, sq)
        comp = sum_over_ranks(comp, self.mesh).sqrt()  # whole matrices: one collective when sharded
        unit = torch.tensor(self.unit_of, dtype=torch.long, device=dev)
        return torch.zeros(len(self.units), dtype=torch.float64, device=dev).index_add_(0, unit, comp)

    def before_optimizer_step(self, step: int) -> Decision | None:
        is_eval = step % self.eval_every == 0
        if not (is_eval or self.accumulate):
            return None
        norms = self._layer_norms()
        if norms is not None:
            self.acc = norms if self.acc is None else self.acc + norms
        if not is_eval:
            return None
        cur = self.acc.cpu() if self.acc is not None else torch.zeros(len(self.units), dtype=torch.float64)
        self.acc = None
        return self._decide(step, cur)

    # ---------------------------------------------------------------- decide
    def _decide(self, step: int, cur: torch.Tensor) -> Decision | None:
        self.evals += 1
        prev, self.prev = self.prev, cur
        if prev is None:
            return None
        ok = torch.isfinite(prev) & (prev > 0) & torch.isfinite(cur)
        frozen = self.ctx.frozen
        unit_frozen = torch.tensor([all(frozen[i] for i in idx) for _, idx in self.units])
        ok &= ~unit_frozen  # frozen layers have no gradients: no change to speak of
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        change = torch.where(ok, (cur - prev).abs() / prev.clamp_min(1e-300), nan)
        if self.record_signals:
            self._history.append((step, change[torch.tensor(self.unit_of, dtype=torch.long)].to(torch.float32)))
        if step < self.grace:
            return None
        live = change[torch.isfinite(change)]
        if live.numel() == 0:
            return None
        if self.threshold_mode == "percentile":
            thr = float(torch.quantile(live, self.threshold / 100))
        else:
            thr = self.threshold
        n_total = len(self.ctx.components)
        n_frozen = sum(frozen)
        freeze: list[int] = []
        for u, (_, idx) in enumerate(self.units):
            if bool(unit_frozen[u]):
                continue  # already part of the prefix
            r = float(change[u])
            todo = [i for i in idx if not frozen[i]]
            too_many = (n_frozen + len(freeze) + len(todo)) / n_total > self.max_frozen_ratio + 1e-12
            if not (math.isfinite(r) and r < thr) or too_many:
                break  # the prefix stops at the first layer that does not qualify
            freeze.extend(todo)
        if not freeze:
            return None
        d = Decision(freeze=freeze, values={i: float(change[self.unit_of[i]]) for i in freeze},
                     taus={i: thr for i in freeze})
        if n_frozen + len(freeze) == n_total:
            d.stop, d.reason = True, "all components frozen"
        return d

    # -------------------------------------------------------------- outputs
    def signal_history(self) -> list[tuple[int, torch.Tensor]]:
        return self._history

    def summary(self) -> dict:
        return {"method": self.name, "eval_every": self.eval_every, "threshold": self.threshold,
                "threshold_mode": self.threshold_mode, "max_frozen_ratio": self.max_frozen_ratio,
                "alpha": self.alpha, "accumulate": self.accumulate, "grace_steps": self.grace,
                "evaluations": self.evals, "layers": len(self.units)}

    def state_dict(self) -> dict:
        return {"prev": None if self.prev is None else self.prev.clone(),
                "acc": None if self.acc is None else self.acc.cpu(), "evals": self.evals,
                "history": [(s, v.clone()) for s, v in self._history]}

    def load_state_dict(self, state: dict) -> None:
        self.prev = state["prev"]
        acc = state["acc"]
        if acc is not None and self.params:
            acc = acc.to(self.params[0].device)
        self.acc, self.evals = acc, state["evals"]
        self._history = [(s, v.clone()) for s, v in state["history"]]
