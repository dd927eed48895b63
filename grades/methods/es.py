"""Classic validation-loss early stopping (the paper's "+ES" baseline).

Every ``eval_every`` optimizer steps the training loop computes the validation loss
and calls :meth:`on_validation`. If the loss has not improved by more than
``min_delta`` for ``patience`` consecutive evaluations, training stops. With
``restore_best`` the trainable weights of the best evaluation are put back at the end
(kept as a CPU copy of the trainable parameters only: the adapter under LoRA).
Its validation time and FLOPs are measured by the loop and reported apart from, and
added to, training time and FLOPs.
"""

from __future__ import annotations

import math

import torch

from ..config import ConfigError
from .base import Decision, MethodContext, StoppingMethod


class EarlyStopping(StoppingMethod):
    name = "es"
    needs_validation = True

    def __init__(self, eval_every: int = 20, patience: int = 3, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        for field, v, ok, rule in [
            ("eval_every", eval_every, isinstance(eval_every, int) and eval_every >= 1, "an integer >= 1"),
            ("patience", patience, isinstance(patience, int) and patience >= 1, "an integer >= 1"),
            ("min_delta", min_delta, isinstance(min_delta, (int, float)) and min_delta >= 0, "a number >= 0"),
            ("restore_best", restore_best, isinstance(restore_best, bool), "true or false"),
        ]:
            if isinstance(v, bool) and field != "restore_best" or not ok:
                raise ConfigError(f"method 'es': {field} = {v!r} is invalid; it must be {rule}")
        self.eval_every, self.patience, self.min_delta, self.restore_best = eval_every, patience, min_delta, restore_best
        self.best_loss = math.inf
        self.best_step: int | None = None
        self.bad_evals = 0
        self.evals: list[tuple[int, float]] = []
        self._best_state: dict[str, torch.Tensor] | None = None
        self.restored = False

    def bind(self, ctx: MethodContext) -> None:
        super().bind(ctx)

    def on_validation(self, step: int, val_loss: float) -> Decision | None:
        self.evals.append((step, val_loss))
        if math.isfinite(val_loss) and val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step, self.bad_evals = val_loss, step, 0
            if self.restore_best:
                self._best_state = {n: p.detach().to("cpu", copy=True)
                                    for n, p in self.ctx.model.named_parameters() if p.requires_grad}
            return None
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            return Decision(stop=True, reason=f"validation loss did not improve for {self.patience} evaluations "
                                              f"(best {self.best_loss:.4f} at step {self.best_step})")
        return None

    @torch.no_grad()
    def on_train_end(self) -> None:
        if not self.restore_best or self._best_state is None:
            return
        params = dict(self.ctx.model.named_parameters())
        for n, v in self._best_state.items():
            params[n].copy_(v.to(params[n].device))
        self.restored = True

    def summary(self) -> dict:
        return {"method": self.name, "eval_every": self.eval_every, "patience": self.patience,
                "min_delta": self.min_delta, "restore_best": self.restore_best, "best_loss": self.best_loss,
                "best_step": self.best_step, "restored": self.restored, "evaluations": len(self.evals)}

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "evals": list(self.evals), "best_state": self._best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss, self.best_step = state["best_loss"], state["best_step"]
        self.bad_evals, self.evals = state["bad_evals"], list(state["evals"])
        self._best_state = state["best_state"]
