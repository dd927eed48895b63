"""Vision-language runs: the multimodal table and the VLM convergence figure.

Built only from run files (read through :mod:`grades.rundir`), like the other tables
and figures. A run is a vision-language run when its ``train.json`` says ``modality: vision-language``
(:func:`grades.vlm.train_inputs`) or counts vision-tower FLOPs.

``multimodal.{csv,md}``
    one row per VLM x setting (and the base model): accuracy ± standard error
    (``grades.vlm evaluate``'s eval.json; the mean over seeds, errors combined as
    sqrt(sum se^2) / n), chance, training time, training FLOPs and the part spent in
    the vision tower and connector, steps, and the matrices frozen per tower
    (``frozen / tracked``, from ``freeze_events.csv`` and ``components_by_tower``).
    The CSV adds the accuracy per question type (``acc_<type>``).

``vlm_convergence.{png,pdf}``
    one column per GradES VLM run (lowest seed): top, the mean signal of each tower
    over the matrices still training, per optimizer step (log scale), with both
    thresholds (``language_tau``, ``vision_tau``) as dotted lines in the tower's colour
    and the end of the grace period; bottom, the number of frozen matrices per tower
    against the step, with the tower's tracked total dashed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_text
from ..rundir import Run, base_dirs, finished_runs, lowest_seeds
from .plotting import grace_line, log, log_y, new_figure, remove_stale, save, signal_tex

TOWERS = ("language", "vision")
TOWER_COLOURS = {"language": "#1f77b4", "vision": "#d62728"}
FIGURE = "vlm_convergence"


def is_vlm_run(train: dict) -> bool:
    return train.get("modality") == "vision-language" or "vision" in (train.get("flops") or {})


def _frozen_by_tower(run: Run) -> dict[str, int]:
    ev = run.events
    if ev.empty:
        return {}
    return {str(k): int(v) for k, v in ev.groupby("tower", observed=True).size().items()}


def _is_benchmark(r: dict) -> bool:
    """A task entry of a benchmark over Hub data (evals/tasks/hub, grades.vlm.run_lm_eval):
    it names its ``metric`` and has no prepared ``data`` directory."""
    return "metric" in r and "data" not in r


def _eval_fields(e: dict | None) -> dict:
    if not e or not e.get("tasks"):
        return {}
    out: dict = {}
    mc = [(t, r) for t, r in e["tasks"].items() if "acc" in r and not _is_benchmark(r)]
    if mc:  # the multiple-choice task (grades.vlm's scorer)
        task, r = mc[0]
        out = {"task": task, "acc": r.get("acc"), "acc_stderr": r.get("acc_stderr"), "n": r.get("n"),
               "chance": r.get("chance_acc") if r.get("chance_acc") is not None else
               (1 / r["n_choices"] if r.get("n_choices") else math.nan)}
        for t, v in (r.get("by_type") or {}).items():
            out[f"acc_{t}"] = v.get("acc")
    gen = [(t, r) for t, r in e["tasks"].items() if "exact_match" in r and not _is_benchmark(r)]
    if gen:  # the short-answer task through lm-eval (hf-multimodal, generate_until)
        task, r = gen[0]
        out.update({"gen_task": task, "gen_em": r.get("exact_match"), "gen_em_stderr": r.get("exact_match_stderr")})
    for t, r in e["tasks"].items():  # benchmarks: one column each, "score_<task>", and its metric
        if _is_benchmark(r) and r.get("score") is not None:
            out[f"score_{t}"] = r["score"]
            out[f"metric_{t}"] = r["metric"]
    return out


def collect(runs_dir: str | Path, runs: list[Run] | None = None) -> pd.DataFrame:
    """One row per finished VLM run (and per VLM base evaluation).

    ``runs``: the finished runs under ``runs_dir`` when already loaded."""
    if runs is None:
        runs = finished_runs(runs_dir)
    rows, vlm_models = [], set()
    for r in runs:
        t = r.train
        if not is_vlm_run(t):
            continue
        model = r.model
        vlm_models.add(model)
        fl = t.get("flops") or {}
        tracked = t.get("components_by_tower") or {}
        frozen = _frozen_by_tower(r)
        row = {"model": model, "setting": t["name"], "mode": t["mode"], "method": t["method"],
               "seed": r.seed, "train_time_s": t.get("train_time_s"),
               "total_time_s": t.get("total_time_s"), "flops_train": fl.get("total"),
               "flops_vision": fl.get("vision", 0.0), "steps_run": t.get("steps_run"),
               "steps_planned": t.get("steps_planned"), "stop_reason": t.get("stop_reason")}
        for tower in TOWERS:
            row[f"frozen_{tower}"] = frozen.get(tower, 0)
            row[f"tracked_{tower}"] = tracked.get(tower, math.nan)
        row.update(_eval_fields(r.eval))
        rows.append(row)
    for b in base_dirs(runs_dir):
        e = b.eval()
        model = b.model
        if e and (model in vlm_models or e.get("backend") == "grades-vlm"):
            rows.append({"model": model, "setting": "Base", "mode": "base", "method": "none", "seed": 0,
                         **_eval_fields(e)})
    return pd.DataFrame(rows)


def _sem(se: pd.Series) -> float:
    se = pd.to_numeric(se, errors="coerce").dropna()
    return float(np.sqrt((se**2).sum()) / len(se)) if len(se) else math.nan


def multimodal_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Seeds averaged; accuracy, stderr and chance in percent; Base first per model."""
    if runs.empty:
        return pd.DataFrame()
    runs = runs.copy()
    for c in ("acc", "acc_stderr", "chance"):
        if c not in runs.columns:
            runs[c] = math.nan
    keys = ["model", "setting", "mode", "method"]
    g = runs.groupby(keys, sort=False)
    errs = [c for c in ("acc_stderr", "gen_em_stderr") if c in runs.columns]
    num = [c for c in runs.columns if c not in keys + ["seed", "stop_reason", "task", "gen_task", *errs]
           and not c.startswith("metric_") and pd.api.types.is_numeric_dtype(runs[c])]
    out = g[num].mean().reset_index()
    for c in errs:
        out[c] = g[c].agg(_sem).values
    out["seeds"] = g["seed"].nunique().values
    if "stop_reason" in runs.columns:
        out["stop_reason"] = g["stop_reason"].agg(lambda s: "; ".join(sorted({str(x) for x in s.dropna()}))).values
    for c in ["task", "gen_task"] + [c for c in runs.columns if c.startswith("metric_")]:
        if c in runs.columns:
            out[c] = g[c].first().values
    pct = ["acc", "acc_stderr", "chance"] + [c for c in out.columns if c.startswith("acc_") and c != "acc_stderr"]
    pct += [c for c in ("gen_em", "gen_em_stderr") if c in out.columns]
    pct += [c for c in out.columns if c.startswith("score_")]  # VQA accuracy, exact match, CIDEr: x100
    for c in pct:
        out[c] = out[c] * 100
    rank = {"base": 0, "fp": 1, "lora": 2}
    out["_r"] = out["mode"].map(rank).fillna(3)
    out["_m"] = out["method"].ne("none")
    out = out.sort_values(["model", "_r", "_m", "setting"]).drop(columns=["_r", "_m"])
    first = ["model", "setting", "mode", "method", "task", "acc", "acc_stderr", "chance", "n", "gen_task", "gen_em",
             "gen_em_stderr", "train_time_s",
             "total_time_s", "flops_train", "flops_vision", "steps_run", "steps_planned", "frozen_language",
             "tracked_language", "frozen_vision", "tracked_vision", "stop_reason", "seeds"]
    bench = [c for c in runs.columns if c.startswith("score_")]  # in the order of eval.json's tasks
    cols = [c for c in first if c in out.columns] + bench + sorted(c for c in out.columns
                                                                   if c not in first and c not in bench)
    return out[cols].reset_index(drop=True)


def _num(v, fmt: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(f) else format(f, fmt)


def _frozen_cell(r, tower: str) -> str:
    tr = r.get(f"tracked_{tower}")
    fz = r.get(f"frozen_{tower}")
    if r["mode"] == "base" or tr is None or (isinstance(tr, float) and math.isnan(tr)):
        return "–"
    return f"{_num(fz, '.0f')}/{_num(tr, '.0f')}"


def multimodal_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_no vision-language runs found_\n"
    has_gen = "gen_em" in table.columns and table["gen_em"].notna().any()
    lines = ["Vision-language models: multiple-choice accuracy (%) ± standard error (grades.vlm evaluate: "
             "log-likelihood of each choice given image and question)"
             + (", short-answer exact match (%) ± standard error (lm-eval, hf-multimodal backend, greedy "
                "generation)" if has_gen else "")
             + ", training time (s, this machine), training FLOPs (analytic; 'vision' = vision tower + connector), "
             "and weight matrices frozen per tower (frozen / tracked).", ""]
    head = ["model", "setting", "accuracy"] + (["short answer"] if has_gen else []) + [
        "train s", "FLOPs", "vision FLOPs", "steps", "frozen language", "frozen vision"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in table.iterrows():
        acc = "–" if pd.isna(r.get("acc")) else f"{r['acc']:.1f} ± {_num(r.get('acc_stderr'), '.1f')}"
        gen = ("–" if pd.isna(r.get("gen_em")) else f"{r['gen_em']:.1f} ± {_num(r.get('gen_em_stderr'), '.1f')}")
        steps = "–" if r["mode"] == "base" else \
            f"{_num(r.get('steps_run'), '.0f')}/{_num(r.get('steps_planned'), '.0f')}"
        lines.append("| " + " | ".join([
            str(r["model"]), str(r["setting"]), acc, *([gen] if has_gen else []), _num(r.get("train_time_s"), ".1f"),
            _num(r.get("flops_train"), ".3g"), _num(r.get("flops_vision"), ".3g"), steps,
            _frozen_cell(r, "language"), _frozen_cell(r, "vision")]) + " |")
    chance = table["chance"].dropna()
    if len(chance):
        lines += ["", f"Chance level: {chance.iloc[0]:.1f}%."]
    scores = [c for c in table.columns if c.startswith("score_") and table[c].notna().any()]
    if scores:
        heads = [f"{c[6:]} ({table[f'metric_{c[6:]}'].dropna().iloc[0]})" if f"metric_{c[6:]}" in table.columns
                 else c[6:] for c in scores]
        lines += ["", "Benchmarks (lm-eval tasks of evals/tasks/hub, x100: accuracy, VQA accuracy, exact match, "
                  "CIDEr):", "", "| model | setting | " + " | ".join(heads) + " |",
                  "|---|---|" + "|".join("---:" for _ in scores) + "|"]
        for _, r in table.iterrows():
            if all(pd.isna(r.get(c)) for c in scores):
                continue
            lines.append(f"| {r['model']} | {r['setting']} | " + " | ".join(_num(r.get(c), ".2f") for c in scores)
                         + " |")
    types = [c for c in table.columns if c.startswith("acc_") and c != "acc_stderr"]
    if types:
        lines += ["", "Accuracy (%) per question type:", "",
                  "| model | setting | " + " | ".join(c[4:] for c in types) + " |",
                  "|---|---|" + "|".join("---" for _ in types) + "|"]
        for _, r in table.iterrows():
            lines.append(f"| {r['model']} | {r['setting']} | " + " | ".join(_num(r.get(c), ".1f") for c in types)
                         + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- figure
def tower_signal_means(signals: pd.DataFrame) -> pd.DataFrame:
    """Per step (index) and tower (columns): mean signal over the tower's matrices still
    training (frozen matrices have no signal)."""
    if signals.empty:
        return pd.DataFrame()
    s = signals[np.isfinite(signals["value"])]
    table = s.pivot_table(index="step", columns="tower", values="value", aggfunc="mean", observed=True)
    table.columns = [str(c) for c in table.columns]
    return table[[t for t in TOWERS if t in table.columns]]


def frozen_count_by_tower(events: pd.DataFrame, last_step: int) -> dict[str, pd.DataFrame]:
    """Per tower: (step, frozen) step-function rows from step 0 to ``last_step``."""
    out = {}
    for tower in TOWERS:
        ev = events[events["tower"] == tower] if len(events) else events
        counts = ev.groupby("step").size().sort_index() if len(ev) else pd.Series(dtype=int)
        steps = [0] + [int(x) for x in counts.index]
        frozen = [0] + [int(c) for c in counts.cumsum()]
        if steps[-1] < last_step:
            steps.append(int(last_step))
            frozen.append(frozen[-1])
        out[tower] = pd.DataFrame({"step": steps, "frozen": frozen})
    return out


def _tracked(r: Run, tower: str) -> int | None:
    n = (r.train.get("components_by_tower") or {}).get(tower)
    if n is None and len(r.signals):
        n = r.signals.loc[r.signals["tower"] == tower, "component"].nunique() or None
    return int(n) if n else None


def vlm_convergence(runs: list[Run]):
    """The figure, or None when no GradES VLM run has signals."""
    runs = [r for r in runs if r.method == "grades" and is_vlm_run(r.train) and r.has_signals]
    if not runs:
        return None
    fig = new_figure(8.6 * len(runs), 7.2)
    axes = fig.subplots(2, len(runs), squeeze=False)
    for j, r in enumerate(runs):
        top, bottom = axes[0][j], axes[1][j]
        means = tower_signal_means(r.signals)
        x_max = max(r.steps_planned, r.steps_run)
        for tower in means.columns:
            s = means[tower]
            s = s[np.isfinite(s) & (s > 0)]
            top.plot(s.index, s.values, color=TOWER_COLOURS.get(tower, "grey"), lw=1.0,
                     label=f"{tower}: mean over its\nunfrozen matrices (of {_tracked(r, tower) or '?'})")
        for tower in TOWERS:
            tau = r.tau_for(tower)
            if math.isfinite(tau) and tau > 0:
                top.axhline(tau, color=TOWER_COLOURS[tower], ls=":", lw=1.8, label=f"{tower}_tau = {tau:.4g}")
        grace_line(top, r.grace_step, f"grace end (α = {r.alpha:g}, step {r.grace_step})")
        log_y(top)
        top.set_xlim(0, x_max)
        top.set_xlabel("optimizer step")
        top.set_ylabel("signal (L1, log scale)")
        top.set_title(f"{r.label}\nmean signal per tower, {signal_tex(r)}", fontsize=10)
        top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        top.grid(True, which="major", alpha=0.3)

        curves = frozen_count_by_tower(r.events, r.steps_run)
        for tower, c in curves.items():
            n = _tracked(r, tower)
            if n is None:
                continue
            col = TOWER_COLOURS[tower]
            bottom.step(c["step"], c["frozen"], where="post", color=col, lw=1.8,
                        label=f"{tower}: {int(c['frozen'].iloc[-1])}/{n} frozen")
            bottom.axhline(n, color=col, ls="--", lw=0.9, alpha=0.6)
        grace_line(bottom, r.grace_step, "grace end")
        if r.steps_run < r.steps_planned:
            bottom.axvline(r.steps_run, color="black", ls="-.", lw=1, label=f"stopped at step {r.steps_run}")
        bottom.set_xlim(0, x_max)
        bottom.set_ylim(bottom=-0.5)
        bottom.set_xlabel("optimizer step")
        bottom.set_ylabel("frozen weight matrices")
        bottom.set_title("frozen matrices per tower (dashed: tracked total)", fontsize=10)
        bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        bottom.grid(True, alpha=0.3)
    fig.suptitle("GradES on a vision-language model: convergence per tower", fontsize=11)
    return fig


# ----------------------------------------------------------- entry point
def write_multimodal(runs_dir: str | Path, tables_dir: str | Path, figures_dir: str | Path,
                     placeholder: bool = True) -> dict[str, Path]:
    """Write multimodal.{csv,md} and vlm_convergence.{png,pdf}. Without a GradES VLM run
    the figure is a placeholder saying so (the workflow expects the file), or, with
    ``placeholder=False``, skipped (and a stale one removed)."""
    runs = finished_runs(runs_dir, quiet=False)
    table = multimodal_table(collect(runs_dir, runs))
    tout = Path(tables_dir)
    written = {
        "multimodal.csv": atomic_write_text(tout / "multimodal.csv", table.to_csv(index=False, float_format="%.6g")),
        "multimodal.md": atomic_write_text(tout / "multimodal.md", multimodal_markdown(table)),
    }
    fout = Path(figures_dir)
    fig = vlm_convergence(lowest_seeds(runs))
    if fig is None:
        why = f"no GradES vision-language run with signals under {runs_dir}"
        if not placeholder:
            log(f"skipping {FIGURE}: {why}")
            remove_stale(fout, FIGURE)
            return written
        log(f"{FIGURE}: {why}; writing a placeholder")
        fig = new_figure(6.4, 2.0)
        fig.text(0.5, 0.5, f"VLM convergence: {why}", ha="center", va="center", fontsize=9, wrap=True)
    written.update(save(fig, fout, FIGURE))
    return written
