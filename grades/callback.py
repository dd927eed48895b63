"""A drop-in ``transformers.TrainerCallback`` (also works with TRL's SFTTrainer).

    from grades import GradESCallback, GradESConfig
    trainer = Trainer(..., callbacks=[GradESCallback(GradESConfig(tau=1e-3, alpha=0.3))])
    trainer.train()
    cb.events, cb.signals_csv(), cb.write("out/")

Gradient signals are read in ``on_pre_optimizer_step`` — after gradient accumulation
and clipping, before the optimizer step.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from .config import GradESConfig
from .controller import Controller
from .methods.grades import GradES


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


class GradESCallback(TrainerCallback):
    def __init__(self, config: GradESConfig | None = None, output_dir: str | Path | None = None, **kwargs) -> None:
        self.config = config if config is not None else GradESConfig(**kwargs)
        self.output_dir = Path(output_dir) if output_dir else None
        self.controller: Controller | None = None

    # ------------------------------------------------------------ lifecycle
    def _ensure(self, state, model, optimizer) -> Controller:
        if self.controller is None:
            if model is None:
                raise RuntimeError("GradESCallback: the Trainer passed no model to the callback")
            planned = int(state.max_steps) if state.max_steps and state.max_steps > 0 else 1
            self.controller = Controller(_unwrap(model), optimizer, GradES(self.config), planned)
        elif optimizer is not None:
            self.controller.set_optimizer(optimizer)
        return self.controller

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self._ensure(state, model, optimizer)

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        ctl = self._ensure(state, model, optimizer)
        if ctl.before_optimizer_step(state.global_step + 1):
            control.should_training_stop = True

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        ctl = self._ensure(state, model, optimizer)
        if ctl.after_optimizer_step(state.global_step + 1):
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.controller is not None and self.controller.should_stop:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.output_dir is not None and self.controller is not None:
            self.controller.write(self.output_dir)

    # -------------------------------------------------------------- results
    @property
    def events(self):
        return self.controller.events if self.controller else []

    @property
    def frozen_ratio(self) -> float:
        return self.controller.freezer.frozen_ratio if self.controller else 0.0

    def signals_csv(self) -> str:
        return self.controller.signals_csv() if self.controller else ""

    def events_csv(self) -> str:
        return self.controller.events_csv() if self.controller else ""

    def summary(self) -> dict:
        return self.controller.summary() if self.controller else {}

    def write(self, out_dir: str | Path) -> dict:
        if self.controller is None:
            raise RuntimeError("GradESCallback.write: training has not started")
        return self.controller.write(out_dir)
