"""Load a workflow config: validate, fill defaults, check sources, expand compare and sweeps.

The Snakefile calls :func:`load` once at parse time, so every bad value stops the
workflow before any job runs, with a message naming the field; every run config the
workflow implies is validated too (:func:`grades.workflow.plan.run_config`), without
importing optional dependencies that only running a method needs. Names that become
paths are checked by :mod:`grades.workflow.names`; a config file is read by
:func:`read_config` (:mod:`grades.yamlfile`: duplicate keys refused, errors at FILE:LINE).
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import ConfigError, closest
from ..resources import workflow_schema
from ..schema import validate
from ..yamlfile import read_yaml
from .jobs import is_vlm
from .matched import expand_matched, matched_runs
from .names import check_names
from .plan import compare_runs, enabled_models, run_config, runs, slug, sweep_settings

SCHEMA = workflow_schema()


def load(config: dict, schema: str | Path = SCHEMA) -> dict:
    """Validate, fill defaults, and validate every run config it implies."""
    cfg = validate(config, schema, "workflow config")
    check_names(cfg)
    expand_extra(cfg)
    slugs: dict[str, str] = {}
    for name in cfg["settings"]:
        s = slug(name)
        if s in slugs:
            raise ConfigError(f"workflow config: settings '{name}' and '{slugs[s]}' map to the same path '{s}'")
        if s == "base":
            raise ConfigError("workflow config: settings.base is reserved for the un-fine-tuned model")
        if len(s) > 120:
            raise ConfigError(f"workflow config: setting '{name}' makes a path name of {len(s)} characters "
                              f"(at most 120); use shorter names or fewer sweep grid keys")
        slugs[s] = name
    datasets = list(cfg["datasets"])
    check_sources(cfg)
    for m, mc in cfg["models"].items():
        if mc["dataset"] is None:
            mc["dataset"] = datasets[0]
        elif mc["dataset"] not in cfg["datasets"]:
            raise ConfigError(f"workflow config: models.{m}.dataset = '{mc['dataset']}' is not a key of datasets"
                              f"{closest(mc['dataset'], datasets)}; known: {datasets}")
        for s in list(mc["settings"]) + list(mc["settings_only"] or []):
            if s not in cfg["settings"]:
                raise ConfigError(f"workflow config: models.{m}: setting '{s}' is not defined under settings"
                                  f"{closest(s, cfg['settings'])}; known: {list(cfg['settings'])}")
    for name, d in cfg["datasets"].items():
        if not d["eval_tasks"] and not d["lm_eval_tasks"]:
            raise ConfigError(f"workflow config: datasets.{name}: no evaluation task; set eval_tasks (local) "
                              f"and/or lm_eval_tasks (lm-eval's own, e.g. [boolq, piqa])")
    groups = {mc["group"] for mc in cfg["models"].values() if mc["group"]}
    for g in cfg["groups"]:
        if g not in groups:
            raise ConfigError(f"workflow config: groups: '{g}' is not the group of any model{closest(g, groups)}; "
                              f"known groups: {sorted(groups)}")
    if not enabled_models(cfg):
        raise ConfigError(f"workflow config: every model belongs to a group that is not enabled; "
                          f"list one under groups (known: {sorted(groups)})")
    for m in cfg["report"]["paper_models"]:
        if m not in cfg["models"]:
            raise ConfigError(f"workflow config: report.paper_models: '{m}' is not a key of models"
                              f"{closest(m, cfg['models'])}")
    check_vlm_tasks(cfg)
    check_eval_tasks(cfg)
    check_baselines(cfg)
    for run in dict.fromkeys(runs(cfg) + compare_runs(cfg) + matched_runs(cfg)):
        run_config(cfg, run, model_dir="cache/x", data_dir="cache/y")  # raises on a bad field
    return cfg


def read_config(path: str | Path) -> dict:
    """A workflow config file as a mapping (not yet validated: :func:`load` does that)."""
    return read_yaml(path, "workflow config file")


def check_configfiles(paths) -> None:
    """Read every config file Snakemake was given with the strict loader: Snakemake's own
    keeps the last of two equal keys and reports YAML errors without a line."""
    for p in paths:
        read_config(p)


def check_baselines(cfg: dict) -> None:
    """``report.baseline``, ``report.paired_baseline`` and every ``settings.<s>.baseline`` name a setting; an absent
    report baseline is FP when there is one, else the first setting."""
    names = list(cfg["settings"])
    b = cfg["report"]["baseline"]
    if b is None:
        cfg["report"]["baseline"] = "FP" if "FP" in names else names[0]
    elif b not in names:
        raise ConfigError(f"workflow config: report.baseline = '{b}' is not a setting{closest(b, names)}; "
                          f"known: {names}")
    pb = cfg["report"].get("paired_baseline")
    if pb is not None and pb not in names:
        raise ConfigError(f"workflow config: report.paired_baseline = '{pb}' is not a setting{closest(pb, names)}; "
                          f"known: {names}")
    for s, st in cfg["settings"].items():
        if st.get("baseline") is not None and st["baseline"] not in names:
            raise ConfigError(f"workflow config: settings.{s}.baseline = '{st['baseline']}' is not a setting"
                              f"{closest(st['baseline'], names)}; known: {names}")


def check_eval_tasks(cfg: dict) -> None:
    """Task names are single names (the jobs join them with commas); a language model's
    ``eval_tasks`` are templates of evals/tasks; a vision-language model's are templates or
    one multiple-choice task that grades.vlm scores itself."""
    from ..evaluate.tasks import STANDARD_TASKS, local_tasks

    for d, dc in cfg["datasets"].items():
        for key in ("eval_tasks", "lm_eval_tasks"):
            for t in dc[key]:
                if not t.strip() or "," in t or any(c.isspace() for c in t):
                    raise ConfigError(f"workflow config: datasets.{d}.{key}: {t!r} is not one task name (empty, "
                                      f"or with a comma or space); list each task as its own item")
    templates = None
    for m, mc in cfg["models"].items():
        d = mc["dataset"]
        templates = templates if templates is not None else local_tasks()
        other = [t for t in cfg["datasets"][d]["eval_tasks"] if t not in templates]
        if is_vlm(cfg, m):
            if len(other) > 1:
                raise ConfigError(f"workflow config: datasets.{d}.eval_tasks: {other} are not templates of "
                                  f"evals/tasks, and the vision-language model '{m}' scores one multiple-choice "
                                  f"task itself; templates: {sorted(templates)}")
            continue
        for t in other:
            hint = (f"; '{t}' is one of lm-eval's own tasks: list it under lm_eval_tasks" if t in STANDARD_TASKS
                    else f"{closest(t, templates)}; templates: {sorted(templates)} (lm-eval's own tasks go "
                         f"under lm_eval_tasks)")
            raise ConfigError(f"workflow config: datasets.{d}.eval_tasks: '{t}' (scored for model '{m}') is not "
                              f"a task template of evals/tasks{hint}")


def check_sources(cfg: dict) -> None:
    """Model and dataset source specs and their options, checked at parse time (no preparing)."""
    from .. import data as gdata
    from .. import models as gmodels

    for m, mc in cfg["models"].items():
        try:
            kind, _ = gmodels.parse_spec(mc["source"])  # checks the argument too (tiny:gpt9)
            gmodels.check_options(kind, mc["options"])
        except ConfigError as e:
            raise ConfigError(f"workflow config: models.{m}.{e.args[0].removeprefix('model.')}") from None
    for d, dc in cfg["datasets"].items():
        try:
            kind, arg = gdata.parse_spec(dc["source"])
            if kind != "jsonl":
                gdata.check_options("data", dc["options"], gdata.source_module(kind, arg).DEFAULTS)
            else:
                check_jsonl_source(cfg, d, dc, arg)
        except (ConfigError, gdata.DataError) as e:
            raise ConfigError(f"workflow config: datasets.{d}.{e.args[0].removeprefix('data.')}") from None


def check_jsonl_source(cfg: dict, name: str, dc: dict, arg: str) -> None:
    """A ``jsonl:DIR`` dataset: a directory with the three splits (their lines are checked when
    the dataset is prepared), no options, and not inside the cache the workflow replaces."""
    from ..data import check_jsonl_dir

    src = Path(arg).expanduser()
    cache = Path("cache") / cfg["profile"]
    if src.resolve() == cache.resolve() or cache.resolve() in src.resolve().parents:
        raise ConfigError(f"data.source = 'jsonl:{arg}' lies inside {cache}/, which the workflow rebuilds "
                          f"(and Snakemake deletes before it does); keep your data outside cache/")
    check_jsonl_dir(src, f"data.source = 'jsonl:{arg}'")
    if dc["options"]:
        raise ConfigError(f"data.options: a jsonl: dataset is copied as it is and takes no options; "
                          f"remove {sorted(dc['options'])}")


def check_vlm_tasks(cfg: dict) -> None:
    """A vision-language model's lm_eval_tasks must be benchmarks of evals/tasks/hub (lm-eval's
    own multimodal tasks are not wired: their prompts and metrics are not the paper's)."""
    from ..vlm import hub_tasks

    hub = None
    for m in cfg["models"]:
        if not is_vlm(cfg, m):
            continue
        d = cfg["models"][m]["dataset"]
        hub = hub if hub is not None else hub_tasks()
        for t in cfg["datasets"][d]["lm_eval_tasks"]:
            if t not in hub:
                raise ConfigError(f"workflow config: datasets.{d}.lm_eval_tasks: '{t}' (scored for the vision-language "
                                  f"model '{m}') is not a benchmark of evals/tasks/hub{closest(t, hub)}; "
                                  f"known: {sorted(hub)}")


def _check_models(models, cfg, where) -> list[str]:
    known = list(cfg["models"])
    for m in models:
        if m not in known:
            raise ConfigError(f"workflow config: {where}: model '{m}' is not a key of models{closest(m, known)}; "
                              f"known: {known}")
    return list(models)


def expand_extra(cfg: dict) -> None:
    """Merge compare-only, sweep and matched-budget settings into cfg['settings']; record them in cfg['extra']."""
    comp = cfg["compare"]
    cmodels = _check_models(comp["models"] if comp["models"] is not None else list(cfg["models"]), cfg,
                            "compare.models")
    for s in comp["include"] or []:
        if s not in cfg["settings"]:
            raise ConfigError(f"workflow config: compare.include: setting '{s}' is not defined under settings"
                              f"{closest(s, cfg['settings'])}; known: {list(cfg['settings'])}")
    extra: dict[str, dict] = {}
    for s, st in comp["settings"].items():
        if s in cfg["settings"]:
            raise ConfigError(f"workflow config: compare.settings.{s} is already defined under settings; "
                              f"list it in compare.include to share its runs instead")
        cfg["settings"][s] = st
        extra[s] = {"target": "compare", "models": cmodels, "sweep": None}
    for name, sw in cfg["sweeps"].items():
        where = f"sweeps.{name}"
        base = sw["base"]
        if base not in cfg["settings"] or base in extra and extra[base]["sweep"] is not None:
            known = [s for s in cfg["settings"] if s not in extra or extra[s]["sweep"] is None]
            raise ConfigError(f"workflow config: {where}.base = '{base}' is not a setting of settings or "
                              f"compare.settings{closest(base, known)}; known: {known}")
        models = _check_models(sw["models"] if sw["models"] is not None else cmodels, cfg, f"{where}.models")
        for s, values in sweep_settings(name, sw).items():
            if s in cfg["settings"]:
                raise ConfigError(f"workflow config: {where} makes setting '{s}', which is already defined")
            cfg["settings"][s] = copy.deepcopy(cfg["settings"][base])
            extra[s] = {"target": sw["target"], "models": models,
                        "sweep": {"name": name, "base": base, "values": values}}
    extra.update(expand_matched(cfg, cmodels, extra))
    cfg["extra"] = extra
