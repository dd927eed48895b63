"""What a run in training holds: its parts (:class:`Training`) and the loop's counters (:class:`LoopState`).

:func:`grades.train.setup.build_training` builds the parts, the loop
(:mod:`grades.train.loop`) advances them and the counters, and a checkpoint
(:mod:`grades.train.snapshot`) saves and restores both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..controller import Controller
from ..distributed import Dist
from ..flops import FlopsMeter
from ..methods.base import StoppingMethod
from .parallel import Parallel
from .precision import Precision


@dataclass
class Training:
    """The parts of one run, built from its config."""

    cfg: dict
    dd: Dist
    device: torch.device
    precision: Precision
    par: Parallel  # how the model is spread over the processes (FSDP's mesh when sharded)
    model_dir: Path
    data_dir: Path
    method: StoppingMethod
    model: Any
    saver: Any  # saves beside the weights: the tokenizer, or a VLM's processor
    stream: Any  # the training batches: a BatchStream (or the VLM one), with state_dict/load_state_dict
    val_batches: list[dict]
    #: every parameter trainable at the start, in the optimizer's order (a freeze keeps it in the list)
    trainable_named: list[tuple[str, torch.nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ctl: Controller
    meter: FlopsMeter
    #: identity of the weights a checkpoint does not store (None when the run needs none)
    fingerprint: list | None
    #: from the inputs, for train.json: n_train, truncated, truncated_validation, record
    info: dict = field(default_factory=dict)

    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.trainable_named]


@dataclass
class LoopState:
    """Counters of the training loop that a checkpoint carries."""

    step: int = 0  # last completed step
    losses: list = field(default_factory=list)  # (step, loss) of applied steps
    nan_steps: list = field(default_factory=list)
    val_log: list = field(default_factory=list)
    val_time: float = 0.0
    val_flops: float = 0.0
    train_time: float = 0.0  # excludes validation and checkpoint writing
    checkpoint_time: float = 0.0
    tokens: int = 0
    resumed_from: list = field(default_factory=list)  # steps resumed from, in order
    step_times: list = field(default_factory=list)  # training seconds of each completed step (no validation)
