"""One fine-tuning run: ``python -m grades.train --config RUN.yaml --out RUN_DIR``.

Reads a run config (schema: ``grades/schemas/run.schema.yaml``), fine-tunes in full
(``fp``) or with LoRA, drives the configured stopping method through the
:class:`grades.controller.Controller`, and leaves the run contract in RUN_DIR:

    train.json          status, stop reason, steps, times, tokens, FLOPs, memory, versions
    signals.csv         step, component, ..., value  (methods that measure signals)
    freeze_events.csv   step, component, layer, kind, type, tower, params, signal, tau
    model/ | adapter/   final weights (+ tokenizer), written atomically

Training time excludes model loading, saving and validation; validation (early
stopping) time and FLOPs are reported on their own.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import yaml

from .config import ConfigError
from .io import atomic_dir, atomic_write_json
from .schema import validate

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------- config
def load_run_config(path_or_dict) -> dict:
    if isinstance(path_or_dict, (str, Path)):
        p = Path(path_or_dict)
        if not p.exists():
            raise ConfigError(f"run config file not found: {p}")
        raw = yaml.safe_load(p.read_text()) or {}
    else:
        raw = path_or_dict
    cfg = validate(raw, "run", "run config")
    from .methods import build_method

    build_method(cfg["method"])  # validates method name and parameters now, before any work
    return cfg


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "peft", "lm_eval", "grades"):
        with contextlib.suppress(Exception):
            out[name] = __import__(name).__version__
    return out


def git_commit() -> str | None:
    with contextlib.suppress(Exception):
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    return None


def peak_rss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb * (1 if sys.platform == "darwin" else 1024))


# ----------------------------------------------------------------------- data
def tokenize_examples(examples: list[dict], tokenizer, seq_len: int, loss_on: str, too_long: str,
                      where: str = "data") -> tuple[list[tuple[list[int], list[int]]], int]:
    """prompt + target -> (input_ids, labels); returns the pairs and how many were truncated."""
    from .data import format_prompt, format_target

    out, truncated = [], 0
    eos = tokenizer.eos_token_id
    for i, ex in enumerate(examples):
        p = tokenizer(format_prompt(ex), add_special_tokens=False)["input_ids"]
        t = tokenizer(format_target(ex), add_special_tokens=False)["input_ids"]
        if eos is not None:
            t = t + [eos]
        if len(p) + len(t) > seq_len:
            if too_long == "error":
                raise ValueError(f"{where}: example {i} (id {ex.get('id')!r}) has {len(p) + len(t)} tokens, "
                                 f"more than seq_len={seq_len}; raise seq_len or set data.too_long: truncate")
            truncated += 1
            keep = max(1, seq_len - len(t))
            p = p[-keep:]  # keep the end of the prompt, next to the answer
            t = t[: seq_len - len(p)]
        ids = p + t
        labels = ([-100] * len(p) if loss_on == "answer" else list(p)) + list(t)
        out.append((ids, labels))
    return out, truncated


def collate(pairs, pad_id: int) -> dict[str, torch.Tensor]:
    n = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    lab = torch.full((len(pairs), n), -100, dtype=torch.long)
    att = torch.zeros((len(pairs), n), dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        att[i, : len(x)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": att}


class BatchStream:
    """Endless seeded shuffled batches (reshuffled each epoch)."""

    def __init__(self, pairs, batch_size: int, pad_id: int, seed: int) -> None:
        self.pairs, self.bs, self.pad = pairs, batch_size, pad_id
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.epoch = 0

    def next(self) -> dict[str, torch.Tensor]:
        if len(self.order) < self.bs:
            self.order += torch.randperm(len(self.pairs), generator=self.gen).tolist()
            self.epoch += 1
        take, self.order = self.order[: self.bs], self.order[self.bs:]
        return collate([self.pairs[i] for i in take], self.pad)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": list(self.order), "epoch": self.epoch}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.order, self.epoch = list(s["order"]), s["epoch"]


# ------------------------------------------------------------------ modelling
def resolve_model(spec: dict) -> Path:
    """A prepared local checkpoint directory for the model spec."""
    from .models import prepare_model, resolve_local

    local = resolve_local(spec["source"])
    if local is not None:
        return local
    return prepare_model(spec["source"], None, **spec.get("options", {}))


def resolve_data(spec: dict) -> Path:
    from .data import prepare_dataset, resolve_local_data

    local = resolve_local_data(spec["source"])
    if local is not None:
        return local
    return prepare_dataset(spec["source"], None, **spec.get("options", {}))


def apply_lora(model, lora: dict):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                     target_modules=lora["targets"], task_type="CAUSAL_LM")
    return get_peft_model(model, cfg, adapter_name=lora["adapter_name"])


def build_optimizer(model, optim: dict):
    params = [p for p in model.parameters() if p.requires_grad]
    if optim["name"] == "sgd":
        return torch.optim.SGD(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
    return torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"],
                             betas=tuple(optim["betas"]), eps=optim["eps"], foreach=True)


@torch.no_grad()
def validation_loss(model, batches: list[dict]) -> float:
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        out = model(**b)
        n = int((b["labels"][:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    model.train(was)
    return total / max(1, count)


# ----------------------------------------------------------------------- run
def run(cfg: dict, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Execute one run; returns the train.json record (also written to out_dir)."""
    from transformers import get_scheduler

    from .controller import Controller
    from .data import load_split
    from .flops import FlopsMeter, forward_flops
    from .methods import build_method
    from .models import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    seed_everything(cfg["seed"])
    t_setup = time.perf_counter()

    model_dir = resolve_model(cfg["model"])
    data_dir = resolve_data(cfg["data"])
    model, tokenizer = load_model(model_dir, dtype=cfg["model"]["dtype"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg["mode"] == "lora":
        model = apply_lora(model, cfg["lora"])
    model.train()

    d = cfg["data"]
    train_ex = load_split(data_dir, d["train_split"])
    pairs, n_trunc = tokenize_examples(train_ex, tokenizer, cfg["seq_len"], d["loss_on"], d["too_long"],
                                       where=f"{data_dir}/{d['train_split']}")
    stream = BatchStream(pairs, cfg["batch_size"], tokenizer.pad_token_id, cfg["seed"])

    method = build_method(cfg["method"])
    val_batches: list[dict] = []
    if method.needs_validation:
        val_ex = load_split(data_dir, d["validation_split"])[: cfg["val_limit"] or None]
        vpairs, _ = tokenize_examples(val_ex, tokenizer, cfg["seq_len"], d["loss_on"], "truncate")
        vb = cfg["val_batch_size"]
        val_batches = [collate(vpairs[i: i + vb], tokenizer.pad_token_id) for i in range(0, len(vpairs), vb)]

    optimizer = build_optimizer(model, cfg["optim"])
    steps = cfg["steps"]
    scheduler = get_scheduler(cfg["schedule"]["name"], optimizer,
                              num_warmup_steps=int(cfg["schedule"]["warmup_ratio"] * steps),
                              num_training_steps=steps)
    ctl = Controller(model, optimizer, method, steps)
    meter = FlopsMeter(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    setup_s = time.perf_counter() - t_setup

    record: dict = {
        "status": "running", "name": cfg["name"], "mode": cfg["mode"], "method": method.name,
        "steps_planned": steps, "config_hash": config_hash(cfg), "seed": cfg["seed"],
        "model_dir": str(model_dir), "data_dir": str(data_dir), "n_train_examples": len(pairs),
        "truncated_examples": n_trunc, "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
    }
    losses: list[tuple[int, float]] = []
    nan_steps: list[int] = []
    val_time = 0.0
    val_flops = 0.0
    val_log: list[tuple[int, float]] = []
    tokens = 0
    step = 0
    stop_reason = "max_steps"

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"train {cfg['name']}", unit="step", dynamic_ncols=True, file=sys.stderr)
    log_every = max(1, steps // 20)  # without a bar (logs, batch jobs): a line every 5% of training
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        step_loss = 0.0
        for _ in range(cfg["grad_accum"]):
            b = stream.next()
            loss = model(**b).loss / cfg["grad_accum"]
            loss.backward()
            step_loss += float(loss.detach())
            tokens += int(b["attention_mask"].sum())
            meter.add_step(b["input_ids"].shape[0], b["input_ids"].shape[1], version=ctl.freezer.version)
        finite = math.isfinite(step_loss)
        if finite and cfg["optim"]["max_grad_norm"]:
            live = [p for p in trainable if p.requires_grad and p.grad is not None]
            gn = torch.nn.utils.clip_grad_norm_(live, cfg["optim"]["max_grad_norm"])
            finite = bool(torch.isfinite(gn))
        if not finite:
            nan_steps.append(step)
            optimizer.zero_grad(set_to_none=True)
            if cfg["nan_policy"] == "stop":
                stop_reason = "non-finite loss or gradient"
                record["status"] = "failed"
                break
            scheduler.step()
            if bar:
                bar.update(1)
            continue
        ctl.before_optimizer_step(step)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ctl.after_optimizer_step(step, step_loss)
        losses.append((step, step_loss))
        if method.needs_validation and step % method.eval_every == 0:
            tv = time.perf_counter()
            vl = validation_loss(model, val_batches)
            val_time += time.perf_counter() - tv
            val_flops += sum(forward_flops(model, vb["input_ids"].shape[0], vb["input_ids"].shape[1])
                             for vb in val_batches)
            val_log.append((step, vl))
            ctl.on_validation(step, vl)
        if bar:
            bar.set_postfix(loss=f"{step_loss:.3f}", frozen=f"{ctl.freezer.frozen_ratio:.0%}", refresh=False)
            bar.update(1)
        elif step % log_every == 0 or step == steps:
            el = time.perf_counter() - t0
            print(f"[train {cfg['name']}] step {step}/{steps} loss {step_loss:.4f} "
                  f"frozen {ctl.freezer.frozen_ratio:.0%} {el / step:.2f} s/step", flush=True)
        if ctl.should_stop:
            stop_reason = ctl.stop_reason or "stopped by method"
            break
    train_s = time.perf_counter() - t0 - val_time
    if bar:
        bar.close()
    end_hook = getattr(method, "on_train_end", None)
    if end_hook is not None:
        end_hook()

    steps_run = step if stop_reason != "non-finite loss or gradient" else step - 1
    if record["status"] == "running":
        record["status"] = "ok"
    flops = meter.to_dict()
    record.update({
        "stop_reason": stop_reason, "steps_run": steps_run, "early_stopped": steps_run < steps,
        "train_time_s": train_s, "validation_time_s": val_time, "total_time_s": train_s + val_time,
        "setup_time_s": setup_s, "time_per_step_s": train_s / max(1, steps_run), "tokens": tokens,
        "flops": {**flops, "validation": val_flops, "total_with_validation": flops["total"] + val_flops},
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "loss_first": losses[0][1] if losses else None, "loss_last": losses[-1][1] if losses else None,
        "loss_curve": losses, "validation_curve": val_log, "nan_steps": nan_steps,
        "nan_policy": cfg["nan_policy"], "grades": ctl.summary(),
        "frozen_ratio": ctl.freezer.frozen_ratio, "frozen_param_ratio": ctl.freezer.frozen_param_ratio,
        "versions": versions(), "git_commit": git_commit(), "config": cfg,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": torch.get_num_threads(),
    })

    ctl.write(out)
    if cfg["save_model"] and record["status"] == "ok":
        target = out / ("adapter" if cfg["mode"] == "lora" else "model")
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        record["saved"] = target.name
    if record["status"] != "ok":
        atomic_write_json(out / "train_failed.json", record)
        raise RuntimeError(f"run failed: {stop_reason} at step {step} (details in {out / 'train_failed.json'})")
    atomic_write_json(out / "train.json", record)  # written last: its presence means success
    return record


def parse_value(text: str):
    """A --set value: YAML, except that numbers YAML 1.1 reads as strings (1e-5) are numbers."""
    v = yaml.safe_load(text)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="run config YAML (see grades/schemas/run.schema.yaml)")
    ap.add_argument("--out", required=True, help="run directory to write")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set steps=50 --set optim.lr=1e-4")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        raw = yaml.safe_load(Path(args.config).read_text()) if Path(args.config).exists() else None
        if raw is None:
            raise ConfigError(f"run config file not found or empty: {args.config}")
        for item in args.set:
            key, _, value = item.partition("=")
            node = raw
            *parents, leaf = key.split(".")
            for k in parents:
                node = node.setdefault(k, {})
            node[leaf] = parse_value(value)
        cfg = load_run_config(raw)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        rec = run(cfg, args.out, progress=not args.no_progress)
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps({k: rec[k] for k in ("status", "stop_reason", "steps_run", "train_time_s", "frozen_ratio")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
