"""One fine-tuning run, from a run config to a run directory: :func:`run`.

Fine-tunes in full (``fp``) or with LoRA, drives the configured stopping method through
the :class:`grades.controller.Controller`, and leaves the run contract in RUN_DIR:

    train.json          status, stop reason, steps, times, tokens, FLOPs, memory, versions
    signals.csv         step, component, ..., value  (methods that measure signals)
    freeze_events.csv   step, component, layer, kind, type, tower, params, signal, tau
    model/ | adapter/   final weights (+ tokenizer, or a VLM's processor), written atomically

Training time excludes model loading, saving, checkpointing and validation; validation
(early stopping) time and FLOPs are reported on their own.

Reliability:

* train.json is written last and only on success; any failure leaves
  train_failed.json (status failed, error, stage) instead. Outputs of an earlier
  attempt in RUN_DIR are removed when a run starts.
* With ``checkpoint_every: N`` a checkpoint (trainable weights, optimizer, scheduler,
  RNG states, batch-stream position, controller/method state, counters) is written
  atomically every N steps to ``--checkpoint-dir`` (default RUN_DIR/.checkpoints;
  the newest two are kept, ``--keep-last``). Rerunning the same command resumes from the newest one
  if the config matches (:func:`resume_hash`: everything but ``threads`` and
  ``checkpoint_every``), or warns, discards them and starts fresh if it does not.
  They are deleted after success (``--keep-checkpoints`` keeps them), kept after a
  failure. A resumed run ends with the same losses, signals and freezes as an
  uninterrupted one (same machine and thread count).
* A step whose loss or gradient norm is NaN/Inf is never applied: ``nan_policy: skip``
  drops it (the method does not see its gradients; GradES forgets its previous
  gradient, so the next check is undefined rather than a stale difference), ``stop``
  ends the run as failed. Both list the steps in ``nan_steps``.
* Fault injection for tests: :mod:`grades.train.faults`.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..controller import Controller
from ..distributed import Dist
from ..flops import FlopsMeter, count_images, forward_flops
from ..io import atomic_dir, atomic_write_json
from ..methods import build_method
from .checkpoint import CHECKPOINT_FORMAT, Checkpoints, base_fingerprint, rng_state, set_rng_state
from .config import config_hash, resume_hash, seed_everything
from .errors import RunFailed
from .faults import Faults, faults_from_env
from .inputs import build_inputs, resolve_data, resolve_model, to_device, validation_loss
from .record import git_commit, peak_rss_bytes, versions


def build_optimizer(model, optim: dict):
    params = [p for p in model.parameters() if p.requires_grad]
    if optim["name"] == "sgd":
        return torch.optim.SGD(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
    return torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"],
                             betas=tuple(optim["betas"]), eps=optim["eps"], foreach=True)


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


STALE_OUTPUTS = ("train.json", "train_failed.json", "model", "adapter", "signals.csv", "freeze_events.csv",
                 "grades_summary.json")  # of an earlier attempt; run.yaml, eval.json are not ours


def run(cfg: dict, out_dir: str | Path, *, progress: bool = True, checkpoint_dir: str | Path | None = None,
        resume: bool = True, keep_checkpoints: bool = False, keep_last: int = 2, faults: Faults | None = None) -> dict:
    """Execute one run; returns the train.json record (also written to out_dir).

    Every ``cfg["checkpoint_every"]`` steps a checkpoint is written to ``checkpoint_dir``
    (default ``OUT/.checkpoints``; the newest ``keep_last`` are kept). With ``resume`` (the default) a run whose checkpoint
    folder holds a checkpoint of the same config (:func:`resume_hash`) continues from
    the newest one; one of another config is discarded with a warning and the run starts
    fresh. Checkpoints are deleted after success unless ``keep_checkpoints``, and kept
    after a failure, so rerunning the same command continues.

    A failure of any kind leaves ``train_failed.json`` (status, error, stage, steps_run) and no
    ``train.json``; outputs of an earlier attempt in OUT are removed first.

    ``faults``: the fault-injection hooks the loop calls (tests); by default the ones the
    ``GRADES_TEST_*_AT_STEP`` environment variables ask for, if any (:mod:`grades.train.faults`).
    """
    on_gpu = (cfg.get("device") or "auto") in ("auto", "cuda") and torch.cuda.is_available()
    dd = Dist.from_env().init("cuda" if on_gpu else "cpu")  # no-op unless a launcher set WORLD_SIZE > 1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dd.is_main:
        for name in STALE_OUTPUTS:  # the run dir describes this attempt only
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    ckpts = Checkpoints(checkpoint_dir if checkpoint_dir is not None else out / ".checkpoints", keep=keep_last)
    record: dict = {"status": "running", "name": cfg.get("name"), "config_hash": config_hash(cfg),
                    "checkpoint_dir": str(ckpts.root)}
    try:
        rec = _run(cfg, out, record, ckpts, progress=progress, resume=resume, dd=dd, faults=faults)
    except BaseException as e:
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}"
        if not isinstance(e, RunFailed):
            record["traceback"] = traceback.format_exc()
        kept = ckpts.list()
        record["checkpoint_kept"] = str(kept[-1][1]) if kept else None
        if dd.is_main:
            with contextlib.suppress(Exception):
                atomic_write_json(out / "train_failed.json", record)
        dd.close()
        raise
    dd.barrier()  # rank 0 has written its files
    if not keep_checkpoints and dd.is_main:
        ckpts.remove()
    dd.close()
    return rec


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: the local rank's GPU when CUDA is available, else the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RunFailed("device: cuda requested but torch sees no GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda", local_rank)


def _run(cfg: dict, out: Path, record: dict, ckpts: Checkpoints, *, progress: bool, resume: bool, dd=None,
         faults: Faults | None = None) -> dict:
    from transformers import get_scheduler

    dd = dd or Dist()
    faults = faults if faults is not None else faults_from_env()
    if cfg.get("threads"):  # the job's threads, shared by the processes of this machine
        torch.set_num_threads(max(1, cfg["threads"] // dd.local_world))
    device = resolve_device(cfg.get("device") or "auto", dd.local_rank)
    if dd.enabled:
        dd.check_batch(cfg["batch_size"])
    seed_everything(cfg["seed"])
    t_setup = time.perf_counter()
    record["stage"] = "setup"

    # a checkpoint to resume from? (read first: a mismatch is reported before any work)
    saved = None
    if dd.is_main:
        ckpts.clean_partial()
    if resume:
        found = ckpts.load_latest()
        if found is not None:
            where, saved = found
            if saved.get("format") != CHECKPOINT_FORMAT or saved.get("resume_hash") != resume_hash(cfg):
                print(f"warning: {where} was written by a different run config (hash "
                      f"{saved.get('resume_hash')} != {resume_hash(cfg)}); discarding the checkpoints in "
                      f"{ckpts.root} and starting from step 0", file=sys.stderr)
                saved = None
                dd.barrier()  # every rank has read before rank 0 deletes
                if dd.is_main:
                    ckpts.remove()
    elif ckpts.list():
        print(f"note: not resuming (--no-resume); removing the checkpoints in {ckpts.root}", file=sys.stderr)
        dd.barrier()
        if dd.is_main:
            ckpts.remove()

    model_dir = resolve_model(cfg["model"])
    data_dir = resolve_data(cfg["data"])
    method = build_method(cfg["method"])
    inputs = build_inputs(cfg, model_dir, data_dir, method.needs_validation)
    model, tokenizer, stream, val_batches = inputs["model"], inputs["saver"], inputs["stream"], inputs["val_batches"]
    n_trunc, n_val_trunc = inputs["truncated"], inputs["truncated_validation"]
    if device.type != "cpu":
        model.to(device)
        val_batches = [to_device(vb, device) for vb in val_batches]

    # The optimizer always holds every parameter trainable at the start; a freeze only
    # releases state. So on resume it is rebuilt over the same list, the saved frozen set
    # is re-applied (requires_grad off), and then the saved optimizer state loads as is.
    trainable_named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [p for _, p in trainable_named]
    optimizer = build_optimizer(model, cfg["optim"])
    steps = cfg["steps"]
    scheduler = get_scheduler(cfg["schedule"]["name"], optimizer,
                              num_warmup_steps=int(cfg["schedule"]["warmup_ratio"] * steps),
                              num_training_steps=steps)
    ctl = Controller(model, optimizer, method, steps, savings=cfg.get("savings"))  # grades.savings
    meter = FlopsMeter(model)
    ls = LoopState()
    every = cfg["checkpoint_every"]
    names = {n for n, _ in trainable_named}
    fingerprint = base_fingerprint(model, names) if (every or saved is not None) else None

    if saved is not None:
        if saved["base_fingerprint"] != fingerprint:
            raise RunFailed(f"cannot resume from {ckpts.root}: the frozen base weights of {model_dir} differ from "
                            f"the ones the checkpoint was trained on; delete {ckpts.root} to start over")
        if set(saved["model"]) != names:
            raise RunFailed(f"cannot resume from {ckpts.root}: its parameters do not match the model's trainable ones")
        with torch.no_grad():
            for n, p in trainable_named:
                p.copy_(saved["model"][n])
        ctl.load_state_dict(saved["controller"])  # re-freezes the saved frozen set first
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        stream.load_state_dict(saved["stream"])
        meter.load_state_dict(saved["meter"], ctl.freezer.version)
        ls = LoopState(**saved["loop"])
        ls.resumed_from.append(ls.step)
        print(f"[train {cfg['name']}] resuming from the checkpoint of step {ls.step} in {ckpts.root}",
              file=sys.stderr, flush=True)
    setup_s = time.perf_counter() - t_setup

    record.update({
        "status": "running", "name": cfg["name"], "mode": cfg["mode"], "method": method.name,
        "steps_planned": steps, "config_hash": config_hash(cfg), "seed": cfg["seed"],
        "model_dir": str(model_dir), "data_dir": str(data_dir), "n_train_examples": inputs["n_train"],
        "truncated_examples": n_trunc, "truncated_validation_examples": n_val_trunc,
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
        "world_size": dd.world,
        **inputs.get("record", {}),  # VLM runs: modality, LoRA targets, matrices per tower
    })
    start = ls.step
    stopped_nonfinite = False
    stop_reason = "max_steps"

    bar = None
    if progress and dd.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=f"train {cfg['name']}", unit="step", dynamic_ncols=True,
                   file=sys.stderr)
    log_every = max(1, steps // 20)  # without a bar (logs, batch jobs): a line every 5% of training
    record["stage"] = "train"
    if saved is not None:
        set_rng_state(saved["rng"])
        del saved
    autocast = (torch.autocast(device.type, dtype=getattr(torch, cfg["autocast"])) if cfg.get("autocast")
                else contextlib.nullcontext())
    t0 = time.perf_counter()
    val0, train0, ckpt_s = ls.val_time, ls.train_time, 0.0

    def train_elapsed() -> float:
        return train0 + (time.perf_counter() - t0) - (ls.val_time - val0) - ckpt_s

    step = start
    for step in range(start + 1, steps + 1):
        step_loss = 0.0
        for _ in range(cfg["grad_accum"]):
            b = stream.next()  # the global batch (every rank draws the same one)
            with autocast:
                if dd.enabled:  # this rank's rows; loss = its label tokens' sum / the global batch's count
                    n_items = int((b["labels"][:, 1:] != -100).sum())
                    loss = model(**to_device(dd.shard(b), device), num_items_in_batch=max(1, n_items)).loss
                else:
                    loss = model(**to_device(b, device)).loss
            loss = loss / cfg["grad_accum"]
            loss = faults.on_loss(step, loss)
            loss.backward()
            step_loss += float(loss.detach())
            ls.tokens += int(b["attention_mask"].sum())
            meter.add_step(b["input_ids"].shape[0], b["input_ids"].shape[1], version=ctl.freezer.version,
                           images=count_images(b))
        if dd.enabled:  # sum over ranks = the gradient (and loss) of the global batch
            dd.all_reduce_grads([p for p in trainable if p.requires_grad])
            step_loss = dd.all_reduce_sum(step_loss, device)
        live = [p for p in trainable if p.requires_grad and p.grad is not None]
        faults.on_gradients(step, live)
        finite = math.isfinite(step_loss)
        if finite and live:
            if cfg["optim"]["max_grad_norm"]:
                gn = torch.nn.utils.clip_grad_norm_(live, cfg["optim"]["max_grad_norm"])
            else:  # no clipping: the same reduction, only to check the gradients are finite
                gn = torch.nn.utils.get_total_norm([p.grad for p in live])
            finite = bool(torch.isfinite(gn))
        if not finite:
            # skipped entirely: no optimizer step, and the method never sees these gradients
            ls.nan_steps.append(step)
            optimizer.zero_grad(set_to_none=True)
            if cfg["nan_policy"] == "stop":
                stopped_nonfinite = True
                stop_reason = f"non-finite loss or gradient at step {step} (nan_policy: stop)"
                break
            ctl.on_skipped_step(step)
            scheduler.step()
        else:
            ctl.before_optimizer_step(step)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ctl.after_optimizer_step(step, step_loss)
            ls.losses.append((step, step_loss))
            if method.needs_validation and step % method.eval_every == 0:
                tv = time.perf_counter()
                vl = validation_loss(model, val_batches)
                ls.val_time += time.perf_counter() - tv
                ls.val_flops += sum(forward_flops(model, vb["input_ids"].shape[0], vb["input_ids"].shape[1],
                                                  count_images(vb)) for vb in val_batches)
                ls.val_log.append((step, vl))
                ctl.on_validation(step, vl)
        ls.step = record["steps_run"] = step
        if bar:
            bar.set_postfix(loss=f"{step_loss:.3f}", frozen=f"{ctl.freezer.frozen_ratio:.0%}", refresh=False)
            bar.update(1)
        elif dd.is_main and (step % log_every == 0 or step == steps):
            el = time.perf_counter() - t0
            print(f"[train {cfg['name']}] step {step}/{steps} loss {step_loss:.4f} "
                  f"frozen {ctl.freezer.frozen_ratio:.0%} {el / (step - start):.2f} s/step", flush=True)
        if ctl.should_stop:
            stop_reason = ctl.stop_reason or "stopped by method"
            break
        if every and step % every == 0 and step < steps and dd.is_main:
            tc = time.perf_counter()
            ls.train_time = train_elapsed()
            ckpts.save(step, {
                "format": CHECKPOINT_FORMAT, "step": step, "resume_hash": resume_hash(cfg),
                "config_hash": config_hash(cfg), "base_fingerprint": fingerprint,
                "model": {n: p.detach() for n, p in trainable_named},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_state(), "stream": stream.state_dict(), "controller": ctl.state_dict(),
                "meter": meter.state_dict(), "loop": asdict(ls),
            })
            dt = time.perf_counter() - tc
            ckpt_s += dt
            ls.checkpoint_time += dt
        faults.after_step(step)
    train_s = train_elapsed()
    val_time = ls.val_time
    if bar:
        bar.close()
    record["stage"] = "finish"
    end_hook = getattr(method, "on_train_end", None)
    if end_hook is not None:
        end_hook()

    steps_run = step - 1 if stopped_nonfinite else step
    losses = ls.losses
    flops = meter.to_dict()
    record.update({
        "status": "failed" if stopped_nonfinite else "ok",
        "stop_reason": stop_reason, "steps_run": steps_run, "early_stopped": steps_run < steps,
        "train_time_s": train_s, "validation_time_s": val_time, "total_time_s": train_s + val_time,
        "setup_time_s": setup_s, "time_per_step_s": train_s / max(1, steps_run),
        "checkpoint_time_s": ls.checkpoint_time, "tokens": ls.tokens,
        "flops": {**flops, "validation": ls.val_flops, "total_with_validation": flops["total"] + ls.val_flops},
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "loss_first": losses[0][1] if losses else None, "loss_last": losses[-1][1] if losses else None,
        "loss_curve": losses, "validation_curve": ls.val_log, "nan_steps": ls.nan_steps,
        "nan_policy": cfg["nan_policy"], "checkpoint_every": every, "resumed_from_steps": ls.resumed_from,
        "grades": ctl.summary(),
        "frozen_ratio": ctl.freezer.frozen_ratio, "frozen_param_ratio": ctl.freezer.frozen_param_ratio,
        "versions": versions(), "git_commit": git_commit(), "config": cfg,
        "device": device.type, "threads": torch.get_num_threads(),
    })
    record.pop("stage", None)
    if dd.enabled:
        record["device"] = f"{device.type} x {dd.world} processes"
    if not dd.is_main:  # files are rank 0's
        if stopped_nonfinite:
            raise RunFailed(f"run failed: {stop_reason}")
        return record

    ctl.write(out)
    if stopped_nonfinite:
        raise RunFailed(f"run failed: {stop_reason} (details in {out / 'train_failed.json'})")
    if cfg["save_model"]:
        record["stage"] = "save"
        target = out / ("adapter" if cfg["mode"] == "lora" else "model")
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        record.pop("stage")
        record["saved"] = target.name
    atomic_write_json(out / "train.json", record)  # written last: its presence means success
    return record
