"""Setting up a run: the process (threads, device, seed), then the parts it trains with.

The order matters for reproducibility: the seed is set before the model is loaded (LoRA
initialisation draws from it) and the parts are built in the same order on every run.
"""

from __future__ import annotations

import torch

from ..controller import Controller
from ..distributed import Dist
from ..flops import FlopsMeter
from ..methods import build_method
from .config import seed_everything
from .errors import RunFailed
from .inputs import build_inputs, resolve_data, resolve_model, to_device
from .parallel import Parallel, place_model
from .precision import resolve_precision
from .snapshot import base_fingerprint
from .state import Training


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: the local rank's GPU when CUDA is available, else the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RunFailed("device: cuda requested but torch sees no GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda", local_rank)


def prepare_process(cfg: dict, dd: Dist) -> torch.device:
    """Threads, device and seed of this process; returns the device to train on."""
    if cfg.get("threads"):  # the job's threads, shared by the processes of this machine
        torch.set_num_threads(max(1, cfg["threads"] // dd.local_world))
    device = resolve_device(cfg.get("device") or "auto", dd.local_rank)
    if dd.enabled:
        dd.check_batch(cfg["batch_size"])
    seed_everything(cfg["seed"])
    return device


def build_optimizer(model, optim: dict, device: torch.device | None = None):
    """The run's optimizer over the trainable parameters. AdamW is fused on a GPU (no
    parameter-sized temporary in its step) and multi-tensor (``foreach``) on the CPU."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optim["name"] == "sgd":
        return torch.optim.SGD(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
    fused = device is not None and device.type == "cuda"
    return torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"],
                             betas=tuple(optim["betas"]), eps=optim["eps"], foreach=not fused, fused=fused)


def check_sharded(cfg: dict, method) -> None:
    """Refuse what a sharded run cannot do (before the model is loaded)."""
    if not method.supports_sharding:
        raise RunFailed(f"method '{method.name}' cannot read sharded (FSDP) parameters; run it in one process "
                        "with parallel: none and precision: fp32")
    on = [k for k, v in (cfg.get("savings") or {}).items() if v and k != "prune_optimizer"]
    if on:
        raise RunFailed(f"savings {on} are not supported with parallel: fsdp (they change weights or module "
                        "outputs that FSDP manages); run them with parallel: none")


def build_training(cfg: dict, dd: Dist, device: torch.device, par: Parallel, *, fingerprint: bool) -> Training:
    """Model, data, method, optimizer, scheduler, controller and FLOPs meter of a run.

    The model is loaded on the CPU, cast to the run's precision and placed (sharded with
    FSDP2, or moved to ``device``) before anything holds its parameters: the optimizer,
    the controller's components and the FLOPs meter see the placed ones.

    The optimizer always holds every parameter trainable at the start; a freeze only
    releases state. So on resume it is rebuilt over the same list, the saved frozen set
    is re-applied (requires_grad off), and then the saved optimizer state loads as is.
    ``fingerprint``: also take the identity of the weights a checkpoint does not store.
    """
    from transformers import get_scheduler

    model_dir = resolve_model(cfg["model"])
    data_dir = resolve_data(cfg["data"])
    method = build_method(cfg["method"])
    if par.sharded:
        check_sharded(cfg, method)
    inputs = build_inputs(cfg, model_dir, data_dir, method.needs_validation)
    model, val_batches = inputs["model"], inputs["val_batches"]
    precision = resolve_precision(cfg)
    place_model(model, precision, par, device)
    if device.type != "cpu":
        val_batches = [to_device(vb, device) for vb in val_batches]

    trainable_named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(model, cfg["optim"], device)
    steps = cfg["steps"]
    scheduler = get_scheduler(cfg["schedule"]["name"], optimizer,
                              num_warmup_steps=int(cfg["schedule"]["warmup_ratio"] * steps),
                              num_training_steps=steps)
    ctl = Controller(model, optimizer, method, steps, savings=cfg.get("savings"))  # grades.savings
    meter = FlopsMeter(model)
    names = {n for n, _ in trainable_named}
    info = {k: inputs[k] for k in ("n_train", "truncated", "truncated_validation")}
    info["record"] = inputs.get("record", {})  # VLM runs: modality, LoRA targets, matrices per tower
    return Training(cfg=cfg, dd=dd, device=device, precision=precision, par=par, model_dir=model_dir,
                    data_dir=data_dir, method=method, model=model, saver=inputs["saver"], stream=inputs["stream"],
                    val_batches=val_batches, trainable_named=trainable_named, optimizer=optimizer,
                    scheduler=scheduler, ctl=ctl, meter=meter,
                    fingerprint=base_fingerprint(model, names) if fingerprint else None, info=info)
