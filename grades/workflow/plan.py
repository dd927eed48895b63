"""What a workflow config plans: the runs of both targets, sweep settings and each run's config.

Paths (the run contract)::

    cache/<profile>/models/<model>/            prepared checkpoint
    cache/<profile>/data/<dataset>/            prepared dataset
    results/runs/<profile>/<model>/<setting>/seed<k>/{run.yaml,train.json,eval.json,...}
    results/runs/<profile>/<model>/base/eval.json
    results/tables/<profile>/*.{csv,md}         figures/<profile>/*.{png,pdf}

Two targets: the main one (:func:`runs`) and ``compare`` (:func:`compare_runs`: the
settings of the ``compare:`` block and the ``sweeps:``, plus the main settings it
includes, whose runs are shared). Compare-only and sweep settings are merged into
``cfg["settings"]`` by :func:`grades.workflow.config.load`, so every rule resolves them
like any setting; ``cfg["extra"]`` records which target each of them belongs to.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import ConfigError
from ..overrides import set_path

#: tables written beside accuracy/efficiency when report.paper_models is set (grades.report.paper)
PAPER_TABLES = ("paper_accuracy.csv", "paper_accuracy.md", "paper_reference.md", "paper_comparison.csv",
                "paper_comparison.md", "paper_efficiency.csv", "paper_efficiency.md", "paper_multimodal.csv",
                "paper_multimodal.md", "paper_splits.csv", "paper_splits.md")


def slug(name: str) -> str:
    """Display name -> path slug: 'FP+GradES' -> 'fp-grades', 'LoRA+ES' -> 'lora-es'."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not s:
        raise ConfigError(f"settings: name {name!r} has no letters or digits to build a path from")
    return s


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class PlannedRun:
    """One run the workflow plans: a model, a setting (display name) and a seed."""

    model: str
    setting: str  # display name
    seed: int

    @property
    def slug(self) -> str:
        return slug(self.setting)


def enabled_models(cfg: dict) -> list[str]:
    """Models that run: those without a group, and those whose group is listed under ``groups``."""
    return [m for m, mc in cfg["models"].items() if mc["group"] is None or mc["group"] in cfg["groups"]]


def runs(cfg: dict) -> list[PlannedRun]:
    """Runs of the main target (``snakemake all``)."""
    extra = cfg.get("extra", {})
    out = []
    enabled = set(enabled_models(cfg))
    for m, mc in cfg["models"].items():
        if m not in enabled:
            continue
        for s in cfg["settings"]:
            if s in extra:
                if extra[s]["target"] != "all" or m not in extra[s]["models"]:
                    continue
            elif mc["settings_only"] is not None and s not in mc["settings_only"]:
                continue
            for seed in cfg["seeds"]:
                out.append(PlannedRun(m, s, seed))
    return out


# ------------------------------------------------------------ compare, sweeps
def compare_models(cfg: dict) -> list[str]:
    """Models of the comparison: compare.models, plus the models of every sweep."""
    models = list(cfg["compare"]["models"] if cfg["compare"]["models"] is not None else cfg["models"])
    for info in cfg.get("extra", {}).values():
        models += [m for m in info["models"] if m not in models]
    return models


def compare_runs(cfg: dict) -> list[PlannedRun]:
    """Runs of the ``compare`` target, model by model: the included main settings
    (runs shared with the main target), then compare-only and sweep settings. The runs of
    ``compare.matched`` settings and of their baselines are included; the matched runs
    themselves are not (:func:`grades.workflow.matched.matched_runs`: planned after those)."""
    extra = cfg.get("extra", {})
    include = cfg["compare"]["include"]
    cmodels = cfg["compare"]["models"] if cfg["compare"]["models"] is not None else list(cfg["models"])
    needs: dict[str, set] = {}  # the method and baseline runs that matched runs are planned from
    for info in extra.values():
        for m in info["models"] if info.get("matched") else ():
            needs.setdefault(m, set()).update((info["matched"]["method"], info["matched"]["baseline"]))
    out = []
    for m in compare_models(cfg):
        only = cfg["models"][m]["settings_only"]
        for s in cfg["settings"]:
            if s in extra:
                if m not in extra[s]["models"] or extra[s].get("matched"):
                    continue  # matched runs: planned once their budget is known (grades.workflow.matched)
            elif s in needs.get(m, ()):
                pass
            elif m not in cmodels or s not in (include if include is not None else only or cfg["settings"]):
                continue
            for seed in cfg["seeds"]:
                out.append(PlannedRun(m, s, seed))
    return out


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest text that reads back as the same float: no two values share a name
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


# run-config fields a sweep may not vary: they identify the run or are set by the workflow
_FIXED_FIELDS = {"name": "the setting's display name", "mode": "set it in the base setting",
                 "seed": "use `seeds:`", "model": "set by the workflow from `models:`",
                 "data.source": "set by the workflow from `datasets:`", "threads": "set by the workflow"}


def sweep_settings(name: str, sweep: dict) -> dict[str, dict]:
    """{display name: {dotted run-config key: value}} of one sweep, in grid order.

    Names are '<base>[k1=v1,k2=v2]' where k is the last part of the dotted key
    ('method.tau' -> 'tau'), or the whole key if two grid keys share that last part."""
    grid = sweep["grid"]
    where = f"workflow config: sweeps.{name}.grid"
    for key, values in grid.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
            raise ConfigError(f"{where}: key '{key}' is not a dotted run-config path such as method.tau or optim.lr")
        for fixed, why in _FIXED_FIELDS.items():
            if key == fixed or key.startswith(fixed + ".") and fixed != "data.source":
                raise ConfigError(f"{where}: '{key}' cannot be swept ({why})")
        if len(set(map(_fmt_value, values))) != len(values):
            raise ConfigError(f"{where}.{key}: repeated value in {values}")
    lasts = [k.rsplit(".", 1)[-1] for k in grid]
    labels = [last if lasts.count(last) == 1 else key for key, last in zip(grid, lasts)]
    out = {}
    for combo in itertools.product(*grid.values()):
        label = ",".join(f"{lab}={_fmt_value(v)}" for lab, v in zip(labels, combo))
        out[f"{sweep['base']}[{label}]"] = dict(zip(grid, combo))
    return out


# ------------------------------------------------------------ run configs
def setting_by_slug(cfg: dict, s: str) -> str:
    for name in cfg["settings"]:
        if slug(name) == s:
            return name
    raise KeyError(s)


def run_config(cfg: dict, run: PlannedRun, model_dir: str, data_dir: str) -> dict:
    """The validated run config of one (model, setting, seed)."""
    from ..train import load_run_config

    mc = cfg["models"][run.model]
    st = cfg["settings"][run.setting]
    ft = deep_merge(cfg["finetune"], mc["finetune"])
    ft = deep_merge(ft, st["finetune"])
    over = mc["settings"].get(run.setting, {})
    sweep = (cfg.get("extra", {}).get(run.setting) or {}).get("sweep")
    if sweep:  # the model's own values for the base setting (e.g. its tau) hold unless the grid sets them
        over = deep_merge(mc["settings"].get(sweep["base"], {}), over)
    matched = (cfg.get("extra", {}).get(run.setting) or {}).get("matched")
    if matched:  # a matched run is its baseline's run (steps set at job time: grades.workflow.matched)
        over = deep_merge(mc["settings"].get(matched["baseline"], {}), over)
    ft = deep_merge(ft, {k: v for k, v in over.items() if k != "method"})
    lr = ft.pop("lr", None)
    if isinstance(lr, dict):
        if st["mode"] not in lr:
            raise ConfigError(f"workflow config: finetune.lr has no entry for mode '{st['mode']}' (keys: {sorted(lr)})")
        lr = lr[st["mode"]]
    if lr is not None:
        ft.setdefault("optim", {})["lr"] = lr
    method = st["method"]
    if isinstance(method, str):
        method = {"name": method}
    if "method" in over:
        method = deep_merge(method, over["method"])
    data_over = ft.pop("data", {})
    rc = {
        **ft,
        "name": run.setting,
        "mode": st["mode"],
        "method": method if method.get("name") != "none" or len(method) > 1 else "none",
        "seed": run.seed,
        "model": {"source": f"local:{model_dir}", "dtype": mc["dtype"]},
        "data": deep_merge({"source": f"jsonl:{data_dir}"}, data_over),
    }
    where = f"workflow config (model '{run.model}', setting '{run.setting}')"
    if sweep:
        where = f"workflow config (sweeps.{sweep['name']}, model '{run.model}', setting '{run.setting}')"
        for key, value in sweep["values"].items():
            set_path(rc, key, value, where)
    try:
        return load_run_config(rc)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def write_run_config(rc: dict, path: str | Path) -> Path:
    """Write a run config as YAML, atomically."""
    from ..io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(rc, sort_keys=False))
