"""One fine-tuning run, from a run config to a run directory: :func:`run`.

Fine-tunes in full (``fp``) or with LoRA, drives the configured stopping method through
the :class:`grades.controller.Controller`, and leaves the run contract in RUN_DIR
(:mod:`grades.rundir`):

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
  atomically every N steps, by every rank its own shards (:mod:`grades.train.snapshot`),
  to ``--checkpoint-dir`` (default RUN_DIR/.checkpoints;
  the newest two are kept, ``--keep-last``). Rerunning the same command resumes from the newest one
  if the config matches (:func:`grades.train.config.resume_hash`: everything but ``threads`` and
  ``checkpoint_every``), or warns, discards them and starts fresh if it does not.
  They are deleted after success (``--keep-checkpoints`` keeps them), kept after a
  failure. A resumed run ends with the same losses, signals and freezes as an
  uninterrupted one (same machine, thread count and number of processes; on another
  number of processes, up to the order of floating-point sums).
* A step whose loss or gradient norm is NaN/Inf is never applied: ``nan_policy: skip``
  drops it (the method does not see its gradients; GradES forgets its previous
  gradient, so the next check is undefined rather than a stale difference), ``stop``
  ends the run as failed. Both list the steps in ``nan_steps``.
* Fault injection for tests: :mod:`grades.train.faults`.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from pathlib import Path

import torch

from ..distributed import Dist
from ..io import atomic_dir
from ..rundir import ADAPTER, MODEL, TRAIN_FAILED, RunDir
from .checkpoint import Checkpoints, find_resumable
from .config import config_hash
from .errors import RunFailed
from .faults import Faults, faults_from_env
from .loop import Loop, LoopResult
from .parallel import Parallel, full_state_dict, parallel_strategy
from .record import result_fields, setup_fields
from .setup import build_training, prepare_process
from .snapshot import restore, set_rng_state
from .state import LoopState, Training


def run(cfg: dict, out_dir: str | Path, *, progress: bool = True, checkpoint_dir: str | Path | None = None,
        resume: bool = True, keep_checkpoints: bool = False, keep_last: int = 2, faults: Faults | None = None) -> dict:
    """Execute one run; returns the train.json record (also written to out_dir).

    Every ``cfg["checkpoint_every"]`` steps a checkpoint is written to ``checkpoint_dir``
    (default ``OUT/.checkpoints``; the newest ``keep_last`` are kept). With ``resume`` (the default) a run whose checkpoint
    folder holds a checkpoint of the same config (:func:`grades.train.config.resume_hash`) continues from
    the newest one; one of another config is discarded with a warning and the run starts
    fresh. Checkpoints are deleted after success unless ``keep_checkpoints``, and kept
    after a failure, so rerunning the same command continues.

    A failure of any kind leaves ``train_failed.json`` (status, error, stage, steps_run) and no
    ``train.json``; outputs of an earlier attempt in OUT are removed first.

    ``faults``: the fault-injection hooks the loop calls (tests); by default the ones the
    ``GRADES_TEST_*_AT_STEP`` environment variables ask for, if any (:mod:`grades.train.faults`).
    """
    on_gpu = (cfg.get("device") or "auto") in ("auto", "cuda") and torch.cuda.is_available()
    dd = Dist.from_env()
    par = Parallel(parallel_strategy(cfg, dd.world), dd.world)
    # joins the launcher's group (WORLD_SIZE > 1), or makes a group of one for a sharded single process
    dd.init("cuda" if on_gpu else "cpu", timeout_s=cfg.get("dist_timeout_s"), group_of_one=par.sharded)
    rd = RunDir(out_dir)
    ckpts = Checkpoints(checkpoint_dir if checkpoint_dir is not None else rd / ".checkpoints", keep=keep_last)
    if dd.is_main:  # checked, locked for this process, leftovers removed: refused before any work (grades.rundir)
        try:
            rd.open_for_writing((ckpts.root,) if cfg.get("checkpoint_every") else ())
        except BaseException:
            dd.close()
            raise
        rd.clear_training_outputs()  # the run dir describes this attempt only
    record: dict = {"status": "running", "name": cfg.get("name"), "config_hash": config_hash(cfg),
                    "checkpoint_dir": str(ckpts.root)}
    try:
        rec = execute(cfg, rd, record, ckpts, progress=progress, resume=resume, dd=dd, par=par, faults=faults)
    except BaseException as e:
        record_failure(record, e, ckpts)
        if dd.is_main:
            with contextlib.suppress(Exception):
                rd.write_failed(record)
        rd.release()
        dd.close()
        raise
    dd.barrier()  # rank 0 has written its files
    if not keep_checkpoints and dd.is_main:
        ckpts.remove()
    rd.release()
    dd.close()
    return rec


def record_failure(record: dict, e: BaseException, ckpts: Checkpoints) -> None:
    """What train_failed.json adds to the record: the error (a traceback unless it is a
    :class:`RunFailed`) and the checkpoint a rerun resumes from."""
    record["status"] = "failed"
    record["error"] = f"{type(e).__name__}: {e}"
    if not isinstance(e, RunFailed):
        record["traceback"] = traceback.format_exc()
    kept = ckpts.list()
    record["checkpoint_kept"] = str(kept[-1][1]) if kept else None


def execute(cfg: dict, rd: RunDir, record: dict, ckpts: Checkpoints, *, progress: bool, resume: bool, dd: Dist,
            par: Parallel, faults: Faults | None = None) -> dict:
    """Set up (or resume), train, and leave the outputs; ``record["stage"]`` says where a failure happened."""
    faults = faults if faults is not None else faults_from_env()
    device = prepare_process(cfg, dd)
    t_setup = time.perf_counter()
    record["stage"] = "setup"
    found = find_resumable(ckpts, cfg, resume=resume, dd=dd)  # first: a mismatch is reported before any work
    tr = build_training(cfg, dd, device, par, fingerprint=bool(cfg["checkpoint_every"]) or found is not None)
    ls, rng = LoopState(), None
    if found is not None:
        ls, rng = restore(tr, *found)
        if dd.is_main:
            print(f"[train {cfg['name']}] resuming from the checkpoint of step {ls.step} in {found[0]}",
                  file=sys.stderr, flush=True)
    setup_s = time.perf_counter() - t_setup
    record.update(setup_fields(tr))

    record["stage"] = "train"
    if rng is not None:
        set_rng_state(rng)  # last: nothing before the first step draws from them
    result = Loop(tr, ls, ckpts=ckpts, record=record, faults=faults, progress=progress).run()

    record["stage"] = "finish"
    end_hook = getattr(tr.method, "on_train_end", None)
    if end_hook is not None:
        end_hook()
    record.update(result_fields(tr, ls, result, setup_s))
    record.pop("stage", None)
    if dd.enabled:
        record["device"] = f"{device.type} x {dd.world} processes"
    return finish(tr, rd, record, result)


def finish(tr: Training, rd: RunDir, record: dict, result: LoopResult) -> dict:
    """Rank 0 writes signals, freeze events, the weights and, last, train.json; a run stopped
    by a non-finite step raises :class:`RunFailed` instead (after signals and events).

    Sharded weights are gathered to rank 0 first (every rank takes part); a full fine-tune
    is saved in the model's dtype (``model.dtype``), an adapter as trained."""
    full = None
    if tr.cfg["save_model"] and not result.failed:
        record["stage"] = "save"
        lora = tr.cfg["mode"] == "lora"
        full = full_state_dict(tr.model, tr.par, None if lora else getattr(torch, tr.precision.saved),
                               only={n for n, _ in tr.trainable_named} if lora else None)
    if not tr.dd.is_main:  # files are rank 0's
        if result.failed:
            raise RunFailed(f"run failed: {result.stop_reason}")
        record.pop("stage", None)
        return record
    tr.ctl.write(rd.path)
    if result.failed:
        raise RunFailed(f"run failed: {result.stop_reason} (details in {rd / TRAIN_FAILED})")
    if tr.cfg["save_model"]:
        target = rd / (ADAPTER if tr.cfg["mode"] == "lora" else MODEL)
        with atomic_dir(target) as tmp:
            if full is None:
                tr.model.save_pretrained(tmp)
            else:
                tr.model.save_pretrained(tmp, state_dict=full)
            tr.saver.save_pretrained(tmp)
        record.pop("stage")
        record["saved"] = target.name
    rd.write_train(record)  # written last: its presence means success
    return record
