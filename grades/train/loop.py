"""The training loop: optimizer steps from the last completed one to the last planned one.

One step (:meth:`Loop.take_step`): forward and backward over ``grad_accum``
micro-batches, the non-finite check (loss and gradient norm; clipping when
configured), then either the optimizer step with the method's hooks and, when due,
validation, or the skip of a non-finite step (``nan_policy``); then progress, the
method's stop, a checkpoint when due, and the fault hooks (:mod:`grades.train.faults`).

Training time excludes validation and checkpoint writing, which are counted on their own.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch

from ..flops import count_images, forward_flops
from ..shards import is_sharded
from .checkpoint import Checkpoints
from .faults import NO_FAULTS, Faults
from .inputs import to_device, validation_loss
from .progress import Progress
from .snapshot import save_checkpoint
from .state import LoopState, Training


@dataclass
class LoopResult:
    """How the loop ended."""

    stop_reason: str  # "max_steps", the method's reason, or the non-finite step's
    failed: bool  # stopped by a non-finite step under nan_policy: stop
    steps_run: int  # the last completed step
    train_time: float  # seconds, over every attempt of a resumed run


class Loop:
    """The steps of one run over its parts ``tr``, advancing the counters ``ls``.

    ``record``: the run's record; its ``steps_run`` follows the last completed step, so a
    failure record says how far the run got. ``faults``: the hooks the loop calls (tests).
    """

    def __init__(self, tr: Training, ls: LoopState, *, ckpts: Checkpoints, record: dict,
                 faults: Faults = NO_FAULTS, progress: bool = True) -> None:
        self.tr, self.ls, self.ckpts, self.record, self.faults = tr, ls, ckpts, record, faults
        self.cfg = tr.cfg
        self.trainable = tr.trainable
        self.show_bar = progress
        self.stop_reason = "max_steps"
        self.failed = False
        self.t0 = self.val0 = self.train0 = self.ckpt_s = 0.0
        self.progress: Progress | None = None
        self.autocast = (torch.autocast(tr.device.type, dtype=getattr(torch, self.cfg["autocast"]))
                         if self.cfg.get("autocast") else contextlib.nullcontext())

    def train_time(self) -> float:
        """Training time so far: before a resume, plus this process's, less validation and checkpoints."""
        return self.train0 + (time.perf_counter() - self.t0) - (self.ls.val_time - self.val0) - self.ckpt_s

    def run(self) -> LoopResult:
        steps, start = self.cfg["steps"], self.ls.step
        self.progress = Progress(self.cfg["name"], steps, start, bar=self.show_bar, main=self.tr.dd.is_main)
        self.t0 = time.perf_counter()
        self.val0, self.train0, self.ckpt_s = self.ls.val_time, self.ls.train_time, 0.0
        step = start
        try:
            for step in range(start + 1, steps + 1):
                if not self.take_step(step):
                    break
            train_time = self.train_time()
        finally:
            self.progress.close()
        return LoopResult(self.stop_reason, self.failed, step - 1 if self.failed else step, train_time)

    def take_step(self, step: int) -> bool:
        """One optimizer step (or its skip); False when the run ends with it. Its training time
        (validation excluded) joins ``step_times``, from which the report puts an interval on speedups."""
        t_step, val0 = time.perf_counter(), self.ls.val_time
        loss = self.forward_backward(step)
        if not self.gradients_finite(step, loss):
            if self.skip(step):
                return False
        else:
            self.apply(step, loss)
        self.ls.step = self.record["steps_run"] = step
        self.ls.step_times.append(round(time.perf_counter() - t_step - (self.ls.val_time - val0), 6))
        self.progress.update(step, loss, self.tr.ctl.freezer.frozen_ratio, time.perf_counter() - self.t0)
        if self.tr.ctl.should_stop:
            self.stop_reason = self.tr.ctl.stop_reason or "stopped by method"
            return False
        self.checkpoint_if_due(step)
        self.faults.after_step(step)
        return True

    # ------------------------------------------------------------ one step
    def forward_backward(self, step: int) -> float:
        """Gradients of the step's global batch over ``grad_accum`` micro-batches; returns its loss."""
        tr, ls, accum = self.tr, self.ls, self.cfg["grad_accum"]
        step_loss = 0.0
        for _ in range(accum):
            b = tr.stream.next()  # the global batch (every rank draws the same one)
            with self.autocast:
                loss = self.batch_loss(b)
            loss = self.faults.on_loss(step, loss / accum)
            loss.backward()
            step_loss += float(loss.detach())
            ls.tokens += int(b["attention_mask"].sum())
            tr.meter.add_step(b["input_ids"].shape[0], b["input_ids"].shape[1], version=tr.ctl.freezer.version,
                              images=count_images(b))
        if tr.dd.enabled:  # FSDP summed the gradients over ranks after each backward; the loss too
            step_loss = tr.dd.all_reduce_sum(step_loss, tr.device)
        return step_loss

    def batch_loss(self, b: dict) -> torch.Tensor:
        tr = self.tr
        if tr.dd.enabled:  # this rank's rows; loss = its label tokens' sum / the global batch's count
            n_items = int((b["labels"][:, 1:] != -100).sum())
            mine, weight = tr.dd.shard(b)
            loss = tr.model(**to_device(mine, tr.device), num_items_in_batch=max(1, n_items)).loss
            return loss if weight == 1.0 else loss * weight
        return tr.model(**to_device(b, tr.device)).loss

    def gradients_finite(self, step: int, step_loss: float) -> bool:
        """Whether the loss and the gradient norm are finite; clips the gradients when configured."""
        live = [p for p in self.trainable if p.requires_grad and p.grad is not None]
        self.faults.on_gradients(step, live)
        finite = math.isfinite(step_loss)
        if finite and live:
            # the norm of the whole gradient: of sharded gradients, one all-reduce of the shards'
            gn = torch.nn.utils.get_total_norm([p.grad for p in live])
            if is_sharded(gn):
                gn = gn.full_tensor()
            max_norm = self.cfg["optim"]["max_grad_norm"]
            if max_norm:  # (without clipping the norm only checks that the gradients are finite)
                torch.nn.utils.clip_grads_with_norm_(live, max_norm, gn)
            finite = bool(torch.isfinite(gn))
        return finite

    def skip(self, step: int) -> bool:
        """A non-finite step is never applied and the method never sees its gradients.
        True when the run ends here (``nan_policy: stop``)."""
        tr = self.tr
        self.ls.nan_steps.append(step)
        tr.optimizer.zero_grad(set_to_none=True)
        if self.cfg["nan_policy"] == "stop":
            self.failed = True
            self.stop_reason = f"non-finite loss or gradient at step {step} (nan_policy: stop)"
            return True
        tr.ctl.on_skipped_step(step)
        tr.scheduler.step()
        return False

    def apply(self, step: int, step_loss: float) -> None:
        """The optimizer step, between the method's hooks; validation when the method asks for it."""
        tr = self.tr
        tr.ctl.before_optimizer_step(step)
        tr.optimizer.step()
        tr.scheduler.step()
        tr.optimizer.zero_grad(set_to_none=True)
        tr.ctl.after_optimizer_step(step, step_loss)
        self.ls.losses.append((step, step_loss))
        if tr.method.needs_validation and step % tr.method.eval_every == 0:
            self.validate(step)

    def validate(self, step: int) -> None:
        """Validation loss for the method; its time and FLOPs are counted apart from training's."""
        tr, ls = self.tr, self.ls
        tv = time.perf_counter()
        vl = validation_loss(tr.model, tr.val_batches)
        ls.val_time += time.perf_counter() - tv
        ls.val_flops += sum(forward_flops(tr.model, vb["input_ids"].shape[0], vb["input_ids"].shape[1],
                                          count_images(vb)) for vb in tr.val_batches)
        ls.val_log.append((step, vl))
        tr.ctl.on_validation(step, vl)

    def checkpoint_if_due(self, step: int) -> None:
        """A checkpoint every ``checkpoint_every`` steps but the last (every rank writes its shards)."""
        every = self.cfg["checkpoint_every"]
        if every and step % every == 0 and step < self.cfg["steps"]:
            tc = time.perf_counter()
            self.ls.train_time = self.train_time()
            save_checkpoint(self.ckpts, self.tr, self.ls)
            dt = time.perf_counter() - tc
            self.ckpt_s += dt
            self.ls.checkpoint_time += dt
