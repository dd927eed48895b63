"""1c estimator accuracy: a shadow run measuring the exact, bf16 and sampled signals on the same gradients."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..components import discover_components
from ..config import GradESConfig
from .timing import Plan, log, med
from .workload import QWEN3_29M, QWEN3_QUICK, ModelSpec, load_dir, random_batch

# the default profile's FP+GradES setting for SmolLM2-135M (config/config.yaml); read from
# that file when it is there, these values otherwise
DEFAULT_PROFILE = dict(steps=80, batch_size=8, seq_len=128, lr=5.0e-5, warmup_ratio=0.05, tau=12.1, alpha=0.3)


def relative_errors(exact: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """|est - exact| / exact over entries where both are finite and exact > 0 (flattened)."""
    exact, est = exact.double().flatten(), est.double().flatten()
    ok = torch.isfinite(exact) & torch.isfinite(est) & (exact > 0)
    return ((est[ok] - exact[ok]).abs() / exact[ok])


def first_below(values: torch.Tensor, steps: list[int], tau: float, grace: int) -> list[int | None]:
    """Per component (column), the first step >= grace whose value is finite and < tau."""
    out: list[int | None] = []
    ok = torch.isfinite(values) & (values < tau)
    for j in range(values.shape[1]):
        hit = None
        for i, s in enumerate(steps):
            if s >= grace and bool(ok[i, j]):
                hit = s
                break
        out.append(hit)
    return out


def freeze_agreement(exact: torch.Tensor, est: torch.Tensor, steps: list[int], tau: float, grace: int,
                     check_interval: int = 1, within: int = 2) -> dict:
    """Would each estimator freeze the same matrices, within ``within`` checks of each other?

    ``exact`` and ``est`` are ``[checks x components]`` signal tables measured on the
    same gradients (a shadow run: nothing is frozen, so both see every check)."""
    a = first_below(exact, steps, tau, grace)
    b = first_below(est, steps, tau, grace)
    same, both, exact_only, est_only, worst = 0, 0, 0, 0, 0
    for x, y in zip(a, b):
        if x is None and y is None:
            same += 1
        elif x is not None and y is not None:
            both += 1
            d = abs(x - y) // check_interval
            worst = max(worst, d)
            same += d <= within
        elif x is not None:
            exact_only += 1
        else:
            est_only += 1
    n = len(a)
    return {"components": n, "frozen_by_exact": sum(x is not None for x in a),
            "frozen_by_estimate": sum(y is not None for y in b), "frozen_by_both": both,
            "exact_only": exact_only, "estimate_only": est_only, "max_check_difference": worst,
            "agree_within": within, "agreeing": same, "all_agree": same == n}


def error_stats(errors: torch.Tensor) -> dict:
    if errors.numel() == 0:
        return {"n": 0, "median": None, "p90": None, "max": None, "mean": None}
    e = errors.double()
    return {"n": int(e.numel()), "median": float(e.median()), "p90": float(torch.quantile(e, 0.9)),
            "max": float(e.max()), "mean": float(e.mean())}


def default_profile_setting(root: Path = Path(".")) -> dict:
    """The default profile's SmolLM2 FP+GradES settings (config/config.yaml), with fallbacks."""
    out = dict(DEFAULT_PROFILE)
    p = root / "config" / "config.yaml"
    try:
        import yaml

        cfg = yaml.safe_load(p.read_text())
        ft = cfg.get("finetune", {})
        m = cfg["models"]["smollm2-135m"]
        out["steps"] = ft.get("steps", out["steps"])
        out["batch_size"] = ft.get("batch_size", out["batch_size"])
        out["seq_len"] = ft.get("seq_len", out["seq_len"])
        lr = ft.get("lr", {})
        out["lr"] = lr.get("fp", out["lr"]) if isinstance(lr, dict) else lr
        out["warmup_ratio"] = ft.get("schedule", {}).get("warmup_ratio", out["warmup_ratio"])
        method = m.get("settings", {}).get("FP+GradES", {}).get("method", {})
        out["tau"] = method.get("tau", out["tau"])
        out["alpha"] = cfg["settings"]["FP+GradES"]["method"].get("alpha", out["alpha"])
        out["source"] = str(p)
    except Exception:  # noqa: BLE001 - fall back to the constants
        out["source"] = "built-in constants (config/config.yaml not readable)"
    return out


def bench_estimator(plan: Plan, quick: bool, smollm2: Path, siqa: Path, root: Path) -> dict:
    """A short shadow run: train without freezing, measure the exact and estimated signals on the same gradients."""
    from transformers import get_scheduler

    from ..signals import SignalTracker

    if not quick and (smollm2 / "config.json").exists() and (siqa / "train.jsonl").exists():
        from ..data import load_split
        from ..train import BatchStream, tokenize_examples

        s = default_profile_setting(root)
        model, tok = load_dir(smollm2)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        pairs, _ = tokenize_examples(load_split(siqa, "train"), tok, s["seq_len"], "answer", "truncate")
        stream = BatchStream(pairs, s["batch_size"], tok.pad_token_id, seed=0)
        next_batch = stream.next
        n = plan.estimator_steps or s["steps"]
        what = (f"smollm2-135m on Social IQa, the default profile's FP+GradES setting ({s['source']}): "
                f"{n} steps{'' if n == s['steps'] else ' (of the profile' + chr(39) + 's ' + str(s['steps']) + ')'}, "
                f"batch {s['batch_size']}, lr {s['lr']}, cosine schedule, tau {s['tau']}, alpha {s['alpha']}")
        model_name, tau_note = "smollm2-135m", "the default profile's tau"
    else:
        s = dict(DEFAULT_PROFILE, steps=plan.estimator_steps or 8, batch_size=plan.batch_size,
                 seq_len=plan.seq_len, lr=1e-3, tau=None)
        spec = ModelSpec("qwen3-quick", "qwen3", QWEN3_QUICK if quick else QWEN3_29M)
        model = spec.build()
        vocab = spec.vocab(model)
        counter = iter(range(10 ** 9))
        next_batch = lambda: random_batch(vocab, s["batch_size"], s["seq_len"], seed=next(counter))  # noqa: E731
        what = (f"{spec.name} on random tokens ({'--quick' if quick else 'SmolLM2 or Social IQa not prepared'}); "
                f"{s['steps']} steps")
        model_name, tau_note = spec.name, "tau chosen after the run: the median exact signal after the grace period"
    steps = plan.estimator_steps or s["steps"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s["lr"], weight_decay=0.0, foreach=True)
    sched = get_scheduler("cosine", opt, num_warmup_steps=int(s["warmup_ratio"] * steps), num_training_steps=steps)
    comps = discover_components(model)
    trackers = {
        "exact": SignalTracker(comps, "grad_delta_l1"),
        "bf16": SignalTracker(comps, "grad_delta_l1", buffer_dtype="bfloat16"),
        "sampled": SignalTracker(comps, "grad_delta_l1", sample_fraction=plan.sample_fraction, seed=0),
    }
    hist = {k: [] for k in trackers}
    measure_s = {k: [] for k in trackers}
    log(f"estimator: {what}")
    for step in range(1, steps + 1):
        b = next_batch()
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for k, tr in trackers.items():
            t = time.perf_counter()
            hist[k].append(tr.measure())
            measure_s[k].append(time.perf_counter() - t)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % max(1, steps // 10) == 0 or step == steps:
            log(f"estimator step {step}/{steps} loss {float(loss.detach()):.4f}")
    step_ids = list(range(1, steps + 1))
    table = {k: torch.stack(v) for k, v in hist.items()}
    grace = GradESConfig(tau=1.0, alpha=s["alpha"]).grace_steps(steps)
    tau = s["tau"]
    if tau is None:
        after = table["exact"][grace - 1:]
        tau = float(after[torch.isfinite(after)].median())
    tracked = sum(c.numel for c in comps)
    out = {"run": what, "model": model_name, "steps": steps, "grace_step": grace, "tau": tau, "tau_note": tau_note,
           "sample_fraction": plan.sample_fraction, "components": len(comps), "tracked_params": tracked,
           "method": "shadow run: nothing is frozen, every estimator measures the same gradients at every step; "
                     "a matrix's freeze step is its first check at or after the grace step with signal < tau",
           "estimators": {}}
    for k in ("bf16", "sampled"):
        out["estimators"][k] = {
            "relative_error": error_stats(relative_errors(table["exact"], table[k])),
            "agreement": freeze_agreement(table["exact"], table[k], step_ids, tau, grace),
            "state_bytes": trackers[k].buffer_bytes(),
            "state_vs_weight_copy": trackers[k].buffer_bytes() / (4 * tracked),
            "measure_s": med(measure_s[k]),
        }
    out["exact"] = {"state_bytes": trackers["exact"].buffer_bytes(), "measure_s": med(measure_s["exact"]),
                    "frozen": sum(x is not None for x in first_below(table["exact"], step_ids, tau, grace))}
    return out
