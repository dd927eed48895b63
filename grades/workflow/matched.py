"""Matched-budget baselines: the method's baseline trained for the budget the method used.

A setting S listed under ``compare.matched`` (a stopping method such as FP+GradES) gets,
for every compared model and seed, up to two runs of its baseline B (``settings.S.baseline``,
else the one setting of S's mode without a method: FP or LoRA), same data, same seed, same
everything but the name and the number of steps:

    B@matched(S)        steps = s, the step at which S's run stopped
    B@matched-flops(S)  steps = round(f * n_B), f = S's training FLOPs / B's, n_B = B's steps

Their schedule (warm-up + cosine) is laid out over those steps, since the run config's
``steps`` is the schedule's length: the matched run is "the same training, told from the
start that it has less compute", not the baseline cut short.

The budget is known only when S's run has ended, so planning has two stages. Parse time
(:func:`expand_matched`, from :func:`grades.workflow.config.expand_extra`) adds the matched
settings to ``cfg["settings"]`` (marked in ``cfg["extra"]``; in no target by themselves)
and the method and baseline runs to the ``compare`` target. Job time: the workflow's
checkpoint ``matched_budget`` reads S's and B's ``train.json`` and writes ``budget.json``
into the matched run's directory (:func:`write_budget`, arithmetic in :func:`compute_budget`);
the ``compare`` rule then asks for the matched runs whose budget is ``planned``
(:func:`budget_planned`: a budget that saves nothing would repeat B's run), and their
``run_config`` job sets the steps from it (:func:`matched_config`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..config import ConfigError, closest
from .plan import PlannedRun, deep_merge, slug

STEPS, FLOPS = "steps", "flops"
BUDGETS = (STEPS, FLOPS)
BUDGET_FILE = "budget.json"
_NAME = re.compile(r"(?P<baseline>[^@]+)@matched(?P<flops>-flops)?\((?P<method>.+)\)")


# ------------------------------------------------------------------ names
def matched_name(baseline: str, method: str, budget: str = STEPS) -> str:
    """'FP@matched(FP+GradES)' (stop step) or 'FP@matched-flops(FP+GradES)' (FLOPs)."""
    if budget not in BUDGETS:
        raise ValueError(f"budget {budget!r} is not one of {BUDGETS}")
    return f"{baseline}@matched{'-flops' if budget == FLOPS else ''}({method})"


def parse_matched(name: str) -> tuple[str, str, str] | None:
    """(baseline, method, budget) of a matched setting's name, or None for any other name."""
    m = _NAME.fullmatch(str(name))
    if not m:
        return None
    return m.group("baseline"), m.group("method"), FLOPS if m.group("flops") else STEPS


# ------------------------------------------------------------------ parse time
def baseline_of(cfg: dict, setting: str, extra=None) -> str:
    """The baseline of ``setting``: its ``baseline`` field, else the one setting of its mode
    without a method (FP for FP+GradES, LoRA for LoRA+GradES) that is not in ``extra``
    (compare-only and sweep settings; default ``cfg["extra"]``)."""
    st = cfg["settings"][setting]
    if st.get("baseline"):
        return st["baseline"]
    extra = cfg.get("extra", {}) if extra is None else extra
    same = [s for s, o in cfg["settings"].items()
            if s not in extra and o["mode"] == st["mode"] and o["method"] in ("none", {"name": "none"})]
    if len(same) != 1:
        raise ConfigError(f"workflow config: compare.matched: setting '{setting}' has "
                          f"{'no' if not same else 'more than one'} setting of mode '{st['mode']}' without a method "
                          f"{same if same else ''} to be its baseline; name it with settings.{setting}.baseline")
    return same[0]


def _runs_setting(cfg: dict, model: str, setting: str) -> bool:
    only = cfg["models"][model]["settings_only"]
    return only is None or setting in only


def expand_matched(cfg: dict, cmodels: list[str], extra: dict[str, dict]) -> dict[str, dict]:
    """The ``cfg["extra"]`` entries of the matched settings of ``compare.matched`` (also added to
    ``cfg["settings"]`` as copies of their baseline's setting); ``cmodels``: the compared models,
    ``extra``: the compare-only and sweep settings so far (never a default baseline)."""
    out: dict[str, dict] = {}
    for s in cfg["compare"]["matched"]:
        if s not in cfg["settings"]:
            raise ConfigError(f"workflow config: compare.matched: '{s}' is not a setting of settings"
                              f"{closest(s, cfg['settings'])}; known: {list(cfg['settings'])}")
        method = cfg["settings"][s]["method"]
        if method in ("none", {"name": "none"}):
            raise ConfigError(f"workflow config: compare.matched: '{s}' has no method, so it saves nothing to match")
        base = baseline_of(cfg, s, extra)
        if base not in cfg["settings"]:
            raise ConfigError(f"workflow config: settings.{s}.baseline = '{base}' is not a setting"
                              f"{closest(base, cfg['settings'])}")
        models = [m for m in cmodels if _runs_setting(cfg, m, s) and _runs_setting(cfg, m, base)]
        if not models:
            raise ConfigError(f"workflow config: compare.matched: no compared model {cmodels} runs both '{s}' and "
                              f"its baseline '{base}' (models.<m>.settings_only)")
        for budget in BUDGETS:
            name = matched_name(base, s, budget)
            if name in cfg["settings"]:
                raise ConfigError(f"workflow config: compare.matched makes setting '{name}', which is already defined")
            cfg["settings"][name] = deep_merge(cfg["settings"][base], {"baseline": base})
            out[name] = {"target": "compare", "models": models, "sweep": None,
                         "matched": {"method": s, "baseline": base, "budget": budget}}
    return out


def matched_info(cfg: dict, setting: str) -> dict | None:
    """{method, baseline, budget} of a matched setting, None for any other."""
    return (cfg.get("extra", {}).get(setting) or {}).get("matched")


def matched_needs(cfg: dict) -> dict[str, set[str]]:
    """{model: the settings whose runs the matched runs are planned from} (methods and baselines)."""
    out: dict[str, set[str]] = {}
    for info in cfg.get("extra", {}).values():
        if info.get("matched"):
            for m in info["models"]:
                out.setdefault(m, set()).update((info["matched"]["method"], info["matched"]["baseline"]))
    return out


def matched_runs(cfg: dict) -> list[PlannedRun]:
    """Every matched run the ``compare`` target may ask for (which ones it does: their budget)."""
    out = []
    for s, info in cfg.get("extra", {}).items():
        if info.get("matched"):
            out += [PlannedRun(m, s, seed) for m in info["models"] for seed in cfg["seeds"]]
    return out


def matched_sources(cfg: dict, run: PlannedRun) -> tuple[PlannedRun, PlannedRun]:
    """(the method's run, the baseline's run) a matched run is planned from."""
    info = matched_info(cfg, run.setting)
    if info is None:
        raise ConfigError(f"'{run.setting}' is not a matched setting")
    return PlannedRun(run.model, info["method"], run.seed), PlannedRun(run.model, info["baseline"], run.seed)


def matched_slug_regex(cfg: dict) -> str:
    """A wildcard constraint matching exactly the matched settings' slugs (nothing when none)."""
    slugs = sorted({slug(s) for s, info in cfg.get("extra", {}).items() if info.get("matched")})
    return "|".join(re.escape(s) for s in slugs) if slugs else "(?!x)x"


# ------------------------------------------------------------------ job time
def compute_budget(method: dict, baseline: dict, budget: str) -> dict:
    """The matched run's steps from the method's and the baseline's train.json records.

    ``steps``: s = the method's ``steps_run`` (budget ``steps``), or round(f * n_B) with
    f = the method's training FLOPs / the baseline's and n_B = the baseline's steps (budget
    ``flops``: the baseline's mean cost per step, so the matched run spends about f of its
    FLOPs), at least 1 and at most the baseline's planned steps. ``planned`` is False when
    the run would repeat something already run: a step budget that is not below the
    baseline's steps (the method did not stop early), a FLOPs budget that is not below the
    step budget (freezing saved nothing beyond stopping)."""
    if budget not in BUDGETS:
        raise ValueError(f"budget {budget!r} is not one of {BUDGETS}")
    for what, t in (("method", method), ("baseline", baseline)):
        if t.get("status") != "ok":
            raise ValueError(f"the {what}'s run did not finish (status {t.get('status')!r})")
    for key in ("seed", "data_dir", "mode"):
        if method.get(key) != baseline.get(key):
            raise ValueError(f"the method's and the baseline's runs differ in {key}: "
                             f"{method.get(key)!r} vs {baseline.get(key)!r}")
    s, n_b = int(method["steps_run"]), int(baseline["steps_planned"])
    f_m, f_b = float(method["flops"]["total"]), float(baseline["flops"]["total"])
    fraction = f_m / f_b if f_b > 0 else math.nan
    per_step = f_b / max(1, int(baseline["steps_run"]))
    if budget == STEPS:
        steps = s
    else:
        steps = math.floor(f_m / per_step + 0.5) if per_step > 0 else n_b
    steps = max(1, min(steps, n_b))
    if budget == STEPS:
        planned = steps < n_b
        reason = (f"the method stopped at step {s} of {n_b}" if planned
                  else f"the method ran all {n_b} steps: the step budget is the baseline's run")
    else:
        planned = steps < min(s, n_b)
        reason = (f"the method used {fraction:.1%} of the baseline's training FLOPs" if planned
                  else f"the FLOPs budget ({steps} steps) is not below the step budget ({min(s, n_b)})")
    return {"budget": budget, "steps": steps, "planned": planned, "reason": reason,
            "method_steps_run": s, "method_steps_planned": int(method["steps_planned"]), "baseline_steps": n_b,
            "method_train_flops": f_m, "baseline_train_flops": f_b, "flops_fraction": fraction}


def write_budget(cfg: dict, run: PlannedRun, method_train: str | Path, baseline_train: str | Path,
                 out: str | Path) -> Path:
    """``budget.json`` of one matched run (the workflow's checkpoint ``matched_budget``)."""
    from ..io import atomic_write_json

    info = matched_info(cfg, run.setting)
    if info is None:
        raise ConfigError(f"'{run.setting}' is not a matched setting")
    method, baseline = (json.loads(Path(p).read_text()) for p in (method_train, baseline_train))
    try:
        b = compute_budget(method, baseline, info["budget"])
    except ValueError as e:
        raise ConfigError(f"{run.model}/{run.setting}/seed{run.seed}: {e}") from None
    doc = {"name": run.setting, "method": info["method"], "baseline": info["baseline"], **b,
           "method_train": str(method_train), "baseline_train": str(baseline_train)}
    return atomic_write_json(out, doc)


def run_key(path: str | Path) -> str:
    """'<model>/<slug>/seed<k>' of a file in a run directory (the report's --select)."""
    return "/".join(Path(str(path)).parts[-4:-1])


def read_budget(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def budget_planned(path: str | Path) -> bool:
    """Whether the matched run of this budget.json is to be trained (not when there is no
    budget.json: a checkpoint job Snakemake only marked done, ``--touch``, wrote none)."""
    if not Path(str(path)).exists():
        return False
    return bool(read_budget(path)["planned"])


def matched_config(rc: dict, budget: str | Path | list | None) -> dict:
    """The run config of a matched run with the steps of its ``budget.json`` (validated again);
    ``rc`` unchanged for any other run (``budget`` empty)."""
    if isinstance(budget, (list, tuple)) or hasattr(budget, "__iter__") and not isinstance(budget, (str, Path)):
        budget = list(budget)
        if len(budget) > 1:
            raise ValueError(f"one budget.json per run, got {budget}")
        budget = budget[0] if budget else None
    if not budget:
        return rc
    from ..train import load_run_config

    return load_run_config({**rc, "steps": int(read_budget(budget)["steps"])})
