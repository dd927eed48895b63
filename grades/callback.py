"""A drop-in ``transformers.TrainerCallback`` (also works with TRL's SFTTrainer).

    from grades import GradESCallback, GradESConfig
    trainer = Trainer(..., callbacks=[GradESCallback(GradESConfig(tau=1e-3, alpha=0.3))])
    trainer.train()
    cb.events, cb.signals_csv(), cb.write("out/")

Gradient signals are read in ``on_pre_optimizer_step`` — after gradient accumulation
and clipping, before the optimizer step.

Checkpoints: at every Trainer save the callback writes its state (frozen set, events,
signal history, previous-gradient buffers) to ``checkpoint-<step>/grades_callback.pt``.
``trainer.train(resume_from_checkpoint=...)`` restores it in ``on_train_begin``, re-freezes
the saved frozen set, and continues with the same decisions as an uninterrupted run.
The file is looked up in ``args.output_dir/checkpoint-<global_step>``; pass
``resume_from=PATH`` (a checkpoint folder) when the checkpoint lives elsewhere.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import TrainerCallback

from .config import GradESConfig
from .controller import Controller
from .io import atomic_path
from .methods.grades import GradES

STATE_FILE = "grades_callback.pt"
STATE_FORMAT = 1


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


class GradESCallback(TrainerCallback):
    def __init__(self, config: GradESConfig | None = None, output_dir: str | Path | None = None,
                 resume_from: str | Path | None = None, savings=None, **kwargs) -> None:
        self.config = config if config is not None else GradESConfig(**kwargs)
        if savings is not None:  # grades.savings.SavingsConfig or a dict of its fields; None: plain freeze
            from .savings import SavingsConfig

            savings = savings if isinstance(savings, SavingsConfig) else SavingsConfig.from_dict(savings)
        self.savings = savings
        self.output_dir = Path(output_dir) if output_dir else None
        self.resume_from = Path(resume_from) if resume_from else None
        self.controller: Controller | None = None
        self.resumed_step: int | None = None

    # ------------------------------------------------------------ lifecycle
    def _ensure(self, state, model, optimizer) -> Controller:
        if self.controller is None:
            if model is None:
                raise RuntimeError("GradESCallback: the Trainer passed no model to the callback")
            planned = int(state.max_steps) if state.max_steps and state.max_steps > 0 else 1
            self.controller = Controller(_unwrap(model), optimizer, GradES(self.config), planned,
                                         savings=self.savings)
        elif optimizer is not None:
            self.controller.set_optimizer(optimizer)
        return self.controller

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step > 0:  # resumed from a Trainer checkpoint
            self._restore(args, state, model, optimizer)
        self._ensure(state, model, optimizer)

    def _state_path(self, args, step: int) -> Path:
        return Path(args.output_dir) / f"checkpoint-{step}" / STATE_FILE

    def _restore(self, args, state, model, optimizer) -> None:
        path = self.resume_from / STATE_FILE if self.resume_from else self._state_path(args, state.global_step)
        if not path.is_file():
            warnings.warn(f"GradESCallback: resuming at step {state.global_step} but {path} does not exist; "
                          "GradES restarts with no frozen matrices and no signal history "
                          "(pass resume_from=CHECKPOINT_DIR if the checkpoint is elsewhere)", stacklevel=2)
            return
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("format") != STATE_FORMAT:
            raise RuntimeError(f"GradESCallback: {path} has format {saved.get('format')}, expected {STATE_FORMAT}")
        if saved["global_step"] != state.global_step:
            raise RuntimeError(f"GradESCallback: {path} is the state of step {saved['global_step']}, but the Trainer "
                               f"resumes at step {state.global_step}")
        if saved["config"] != self.config.to_dict():
            warnings.warn(f"GradESCallback: resuming with a different GradESConfig than the checkpoint's "
                          f"({saved['config']} -> {self.config.to_dict()})", stacklevel=2)
        self.controller = None  # a fresh controller on this model, then the saved state
        ctl = self._ensure(state, model, optimizer)
        ctl.load_state_dict(saved["controller"])  # re-freezes the saved frozen set
        self.resumed_step = state.global_step

    def on_save(self, args, state, control, **kwargs):
        if self.controller is None or not getattr(args, "should_save", True):
            return
        folder = self._state_path(args, state.global_step).parent
        if not folder.is_dir():
            return
        with atomic_path(folder / STATE_FILE) as tmp:
            torch.save({"format": STATE_FORMAT, "global_step": state.global_step, "config": self.config.to_dict(),
                        "controller": self.controller.state_dict()}, tmp)

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
