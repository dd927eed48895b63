"""Paired comparisons of every setting with its baseline, item by item, from the runs' per-item records.

Every setting of a model is scored on the same test items, so each one is compared with
its baseline on those items (:func:`grades.report.stats.compare_paired`): the baseline is
the setting of the same model and mode without a stopping method (FP for FP+GradES, LoRA for
LoRA+ES), or the one setting that ``baseline`` names. Seed k of a setting is paired with
seed k of its baseline; seeds that only one of them has are left out, and so are items
that are not in every paired evaluation.

The per-item records are the ``samples.jsonl`` beside each eval.json, read through
:mod:`grades.rundir`; an item is (task, ``doc_id``, else ``id``) and its score is ``acc``,
or the task's own metric (eval.json ``metric``) where it has no ``acc``. A run without
records is left out of the pairing (the tables then show no paired columns for it).

Rows are per task and, for each pool of several tasks (by default all of a model's
tasks; the tables pool the tasks of one protocol), one more over all of them
(``task`` :data:`ALL_TASKS`, ``pool`` its name), where each task's items are weighted so
that every task counts equally, as in the tables' average.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..rundir import Run, finished_runs
from .stats import DEFAULT_MARGIN, N_RESAMPLES, PairedComparison, compare_paired

ALL_TASKS = "all tasks"
OWN = "own"  # the baseline of the setting's own mode
MODE_BASELINES = {"fp": "FP", "lora": "LoRA"}
KEYS = ["model", "setting", "mode", "method", "baseline", "task", "pool"]


def item_scores(records: Iterable[Mapping], metrics: Mapping[str, str] | None = None) -> dict[tuple, float]:
    """{(task, item): score} of an evaluation's per-item records; ``metrics``: task -> the
    metric to read where a record has no ``acc``. Records without a number are skipped."""
    metrics = metrics or {}
    out: dict[tuple, float] = {}
    for r in records:
        task = r.get("task")
        item = r.get("doc_id") if r.get("doc_id") is not None else r.get("id")
        v = r.get("acc")
        if v is None:
            v = r.get(metrics.get(task) or "acc")
        if isinstance(v, bool):
            v = float(v)
        if task is None or item is None or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        out[(str(task), str(item))] = float(v)
    return out


def run_item_scores(r: Run) -> dict[tuple, float] | None:
    """The item scores of a finished run's evaluation, or None when it has no records."""
    recs = r.files.samples(quiet=True)
    if not recs:
        return None
    ev = r.eval or {}
    metrics = {t: e.get("metric") for t, e in (ev.get("tasks") or {}).items() if isinstance(e, dict)}
    return item_scores(recs, metrics) or None


def baseline_of(model: str, setting: str, mode: str, method: str, settings: Mapping[tuple, tuple],
                named: str | None = None) -> str | None:
    """The setting that ``setting`` is compared with: ``named`` (when the model has it), else
    the one of the same mode without a stopping method (FP / LoRA first). ``settings``:
    {(model, setting): (mode, method)}. None for a baseline itself."""
    if named and named != OWN:
        return named if (model, named) in settings and named != setting else None
    if method == "none":
        return None
    own = sorted(s for (m, s), (md, me) in settings.items() if m == model and md == mode and me == "none")
    if not own:
        return None
    preferred = MODE_BASELINES.get(mode)
    return preferred if preferred in own else own[0]


def _matrices(a: Mapping[int, dict], b: Mapping[int, dict], seeds: list[int], tasks: list[str]):
    """Aligned (items, seeds) matrices of two settings on the items every paired evaluation has."""
    common = None
    for k in seeds:
        keys = set(a[k]) & set(b[k])
        common = keys if common is None else common & keys
    items = sorted(i for i in (common or ()) if i[0] in tasks)
    sa = np.array([[a[k][i] for k in seeds] for i in items], dtype=float).reshape(len(items), len(seeds))
    sb = np.array([[b[k][i] for k in seeds] for i in items], dtype=float).reshape(len(items), len(seeds))
    return items, sa, sb


def task_weights(items: list[tuple]) -> np.ndarray:
    """Per-item weights (mean 1) under which every task counts equally."""
    tasks = [t for t, _ in items]
    counts = pd.Series(tasks).value_counts()
    w = np.array([len(items) / (len(counts) * counts[t]) for t in tasks], dtype=float)
    return w


def _compare(items, sa, sb, *, margin, seed, n_resamples, pooled: bool) -> PairedComparison:
    if pooled:  # weighted items: every task counts equally; the weights keep the per-item scale
        w = task_weights(items)[:, None]
        return compare_paired(sa * w, sb * w, margin=margin, seed=seed, n_resamples=n_resamples)
    return compare_paired(sa, sb, margin=margin, seed=seed, n_resamples=n_resamples)


def paired_comparisons(runs: list[Run], *, baseline: str | None = None, margin: float = DEFAULT_MARGIN,
                       seed: int = 0, per_seed: bool = False, n_resamples: int = N_RESAMPLES,
                       pools: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per model x setting x task (and x seed with ``per_seed``) that has a baseline
    with per-item records: :data:`KEYS`, ``seed`` / ``seeds_paired`` and every field of
    :class:`grades.report.stats.PairedComparison`. ``pools``: task -> the pool it is
    averaged in (default: one pool, ""); a pool of several tasks gets a row of its own."""
    pools = pools or {}
    settings: dict[tuple, tuple] = {}
    scores: dict[tuple, dict[int, dict]] = {}
    for r in runs:
        settings.setdefault((r.model, r.setting), (r.mode, r.method))
        s = run_item_scores(r)
        if s is not None:
            scores.setdefault((r.model, r.setting), {})[r.seed] = s
    rows = []
    for (model, setting), (mode, method) in settings.items():
        base = baseline_of(model, setting, mode, method, settings, baseline)
        if base is None or (model, setting) not in scores or (model, base) not in scores:
            continue
        a, b = scores[(model, setting)], scores[(model, base)]
        seeds = sorted(set(a) & set(b))
        groups = [[k] for k in seeds] if per_seed else [seeds]
        for group in groups:
            if not group:
                continue
            tasks = sorted({t for k in group for t, _ in a[k]})
            by_pool: dict[str, list[str]] = {}
            for t in tasks:
                by_pool.setdefault(str(pools.get(t, "")), []).append(t)
            units = [(t, str(pools.get(t, "")), [t]) for t in tasks]
            units += [(ALL_TASKS, pool, ts) for pool, ts in by_pool.items() if len(ts) > 1]
            for task, pool, members in units:
                items, sa, sb = _matrices(a, b, group, members)
                if not items:
                    continue
                c = _compare(items, sa, sb, margin=margin, seed=seed, n_resamples=n_resamples,
                             pooled=task == ALL_TASKS)
                rows.append({"model": model, "setting": setting, "mode": mode, "method": method, "baseline": base,
                             "task": task, "pool": pool, "seed": group[0] if per_seed else math.nan,
                             "seeds_paired": len(group), **c.as_dict()})
    cols = KEYS + ["seed", "seeds_paired"] + list(PairedComparison.__dataclass_fields__)
    return pd.DataFrame(rows, columns=cols)


def collect_paired(runs_dir: str | Path, **kw) -> pd.DataFrame:
    """:func:`paired_comparisons` of every finished run under a profile's runs root."""
    return paired_comparisons(finished_runs(runs_dir), **kw)
