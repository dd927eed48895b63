"""The workflow config: validation, expansion into runs, and paths.

The Snakefile calls :func:`load` once at parse time, so every bad value stops the
workflow before any job runs, with a message naming the field. It then asks this
module for the list of runs and for each run's config; all logic lives here, where
it is tested, and the rules only wire files together.

Paths (the run contract)::

    cache/<profile>/models/<model>/            prepared checkpoint
    cache/<profile>/data/<dataset>/            prepared dataset
    results/runs/<profile>/<model>/<setting>/seed<k>/{run.yaml,train.json,eval.json,...}
    results/runs/<profile>/<model>/base/eval.json
    results/tables/<profile>/*.{csv,md}         figures/<profile>/*.{png,pdf}

Two targets: the main one (``runs``) and ``compare`` (``compare_runs``: the settings
of the ``compare:`` block and the ``sweeps:``, plus the main settings it includes,
whose runs are shared). Compare-only and sweep settings are merged into
``cfg["settings"]`` by :func:`load`, so every rule resolves them like any setting;
``cfg["extra"]`` records which target each of them belongs to.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError, closest
from .overrides import set_path
from .resources import workflow_schema
from .schema import validate

SCHEMA = workflow_schema()
#: tables written beside accuracy/efficiency when report.paper_models is set (grades.report.paper)
PAPER_TABLES = ("paper_accuracy.csv", "paper_accuracy.md", "paper_reference.md", "paper_comparison.csv",
                "paper_comparison.md", "paper_efficiency.csv", "paper_efficiency.md", "paper_multimodal.csv",
                "paper_multimodal.md")


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


def load(config: dict, schema: str | Path = SCHEMA) -> dict:
    """Validate, fill defaults, and validate every run config it implies."""
    cfg = validate(config, schema, "workflow config")
    _expand_extra(cfg)
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
    _check_sources(cfg)
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
    _check_vlm_tasks(cfg)
    if cfg["report"]["baseline"] not in cfg["settings"]:
        first = next(iter(cfg["settings"]))
        cfg["report"]["baseline"] = first
    for run in dict.fromkeys(runs(cfg) + compare_runs(cfg)):
        run_config(cfg, run, model_dir="cache/x", data_dir="cache/y")  # raises on a bad field
    return cfg


def _check_sources(cfg: dict) -> None:
    """Model and dataset source specs and their options, checked at parse time (no preparing)."""
    from . import data as gdata
    from . import models as gmodels

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
        except ConfigError as e:
            raise ConfigError(f"workflow config: datasets.{d}.{e.args[0].removeprefix('data.')}") from None


def _check_vlm_tasks(cfg: dict) -> None:
    """A vision-language model's lm_eval_tasks must be benchmarks of evals/tasks/hub (lm-eval's
    own multimodal tasks are not wired: their prompts and metrics are not the paper's)."""
    from .vlm import hub_tasks

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
    (runs shared with the main target), then compare-only and sweep settings."""
    extra = cfg.get("extra", {})
    include = cfg["compare"]["include"]
    cmodels = cfg["compare"]["models"] if cfg["compare"]["models"] is not None else list(cfg["models"])
    out = []
    for m in compare_models(cfg):
        only = cfg["models"][m]["settings_only"]
        for s in cfg["settings"]:
            if s in extra:
                if m not in extra[s]["models"]:
                    continue
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


def _check_models(models, cfg, where) -> list[str]:
    known = list(cfg["models"])
    for m in models:
        if m not in known:
            raise ConfigError(f"workflow config: {where}: model '{m}' is not a key of models{closest(m, known)}; "
                              f"known: {known}")
    return list(models)


def _expand_extra(cfg: dict) -> None:
    """Merge compare-only and sweep settings into cfg['settings']; record them in cfg['extra']."""
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
    cfg["extra"] = extra


def setting_by_slug(cfg: dict, s: str) -> str:
    for name in cfg["settings"]:
        if slug(name) == s:
            return name
    raise KeyError(s)


def run_config(cfg: dict, run: PlannedRun, model_dir: str, data_dir: str) -> dict:
    """The validated run config of one (model, setting, seed)."""
    from .train import load_run_config

    mc = cfg["models"][run.model]
    st = cfg["settings"][run.setting]
    ft = deep_merge(cfg["finetune"], mc["finetune"])
    ft = deep_merge(ft, st["finetune"])
    over = mc["settings"].get(run.setting, {})
    sweep = (cfg.get("extra", {}).get(run.setting) or {}).get("sweep")
    if sweep:  # the model's own values for the base setting (e.g. its tau) hold unless the grid sets them
        over = deep_merge(mc["settings"].get(sweep["base"], {}), over)
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


# ---------------------------------------------------------------- jobs
def eval_gpus(cfg: dict, model: str) -> int:
    mc = cfg["models"][model]
    if mc["eval_gpus"] is not None:
        return mc["eval_gpus"]
    return 1 if mc["gpus"] > 0 else 0


def job_resources(cfg: dict, model: str, rule: str) -> dict:
    """Cluster resources of one job: ``{"gpu", "mem_mb", "runtime", "cpus"}``.

    ``rule`` is ``train``, ``evaluate`` or ``prepare``. Scaled by the model's ``size_b``
    (see the ``jobs`` block of the workflow schema); ``models.<m>.resources.<rule>``
    overrides any of them. ``cpus`` 0 means "all local cores" (the Snakefile decides)."""
    if rule not in ("train", "evaluate", "prepare"):
        raise ValueError(f"no job resources for rule {rule!r}")
    mc = cfg["models"][model]
    j = cfg["jobs"][rule]
    gpu = {"train": mc["gpus"], "evaluate": eval_gpus(cfg, model), "prepare": 0}[rule]
    size = mc["size_b"] or 0.0
    procs = max(1, gpu) if rule == "train" else 1
    out = {
        "gpu": gpu,
        "mem_mb": int(math.ceil(j["mem_mb"] + j["mem_mb_per_b"] * size * procs)),
        "runtime": int(math.ceil(j["runtime"] + j["runtime_per_b"] * size)),
        "cpus": j["cpus_per_gpu"] * gpu if gpu else j["cpus"],
    }
    out.update(mc["resources"].get(rule, {}))
    return out


def train_launcher(cfg: dict, model: str, python: str) -> str:
    """The command that starts ``grades.train`` for one model: the interpreter, or a
    one-process-per-GPU launcher when the model trains on more than one GPU."""
    n = cfg["models"][model]["gpus"]
    py = quote(python)
    if n <= 1:
        return f"{py} -m grades.train"
    la = cfg["launcher"]
    extra = f" {la['args']}" if la["args"] else ""
    if la["name"] == "accelerate":
        return (f"{py} -m accelerate.commands.launch --num_processes {n} --num_machines 1"
                f"{extra} --module grades.train")
    return f"{py} -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node {n}{extra} -m grades.train"


def eval_args(cfg: dict, model: str) -> str:
    """Options of ``python -m grades.evaluate`` common to every evaluation of ``model``."""
    e = cfg["eval"]
    parts = [f"--backend {e['backend']}", f"--batch-size {e['batch_size']}", f"--dtype {e['dtype']}",
             f"--num-fewshot {e['num_fewshot']}", f"--seed {e['seed']}"]
    if e["limit"]:
        parts.append(f"--limit {e['limit']}")
    if e["lora"] == "merged":
        parts.append("--merge-adapter")
    if e["backend"] == "vllm":
        parts += vllm_args(cfg, model)
    else:
        parts.append(f"--device {quote(e['device'])}")
    return " ".join(parts)


def vllm_args(cfg: dict, model: str) -> list[str]:
    """vLLM's options of an evaluation of ``model`` (grades.evaluate and grades.vlm share them)."""
    e = cfg["eval"]
    out = [f"--tensor-parallel-size {max(1, eval_gpus(cfg, model))}",
           f"--gpu-memory-utilization {e['gpu_memory_utilization']}"]
    return out + ([f"--max-model-len {e['max_model_len']}"] if e["max_model_len"] else [])


def eval_tasks(cfg: dict, model: str) -> list[str]:
    d = cfg["datasets"][cfg["models"][model]["dataset"]]
    return list(d["eval_tasks"]) + list(d["lm_eval_tasks"])


# ------------------------------------------------------------ vision-language
IMAGE_DATASETS = ("synthetic:shapes",)  # data sources whose rows carry images


def is_image_dataset(dc: dict) -> bool:
    """A dataset whose rows carry pictures: ``synthetic:shapes``, or a Hub dataset read with an
    image format (``hf-dataset:...`` with ``options.format: cauldron``)."""
    from .data.hub import IMAGE_FORMATS

    src = dc["source"]
    return src in IMAGE_DATASETS or (src.startswith("hf-dataset:") and dc["options"].get("format") in IMAGE_FORMATS)


def is_vlm(cfg: dict, model: str) -> bool:
    """Whether a model of the workflow config is a vision-language model, decided at parse
    time: a ``tiny-vlm:`` source, an image dataset (:func:`is_image_dataset`), or an existing
    ``local:`` checkpoint whose config.json has a ``vision_config``."""
    mc = cfg["models"][model]
    src = mc["source"]
    if src.startswith(("tiny-vlm:", "compose-vlm:")):
        return True
    if is_image_dataset(cfg["datasets"][mc["dataset"]]):
        return True
    if src.startswith("local:") or Path(src).expanduser().is_dir():
        from .models import is_vlm_dir

        return is_vlm_dir(Path(src.removeprefix("local:")).expanduser())
    return False


def vlm_models(cfg: dict) -> list[str]:
    return [m for m in cfg["models"] if is_vlm(cfg, m)]


def model_regex(models: list[str]) -> str:
    """A wildcard constraint matching exactly these model keys (nothing when empty)."""
    return "|".join(re.escape(m) for m in models) if models else "(?!x)x"


def vlm_prompt(cfg: dict, model: str) -> str:
    """The prompt format a VLM is fine-tuned with: ``finetune.data.prompt`` of the model (over
    the shared finetune block), ``plain`` by default."""
    ft = deep_merge(cfg["finetune"], cfg["models"][model]["finetune"])
    return (ft.get("data") or {}).get("prompt", "plain")


def vlm_eval_args(cfg: dict, model: str) -> str:
    """Arguments of ``python -m grades.vlm evaluate`` for a VLM of the workflow config.

    Tasks: the dataset's ``eval_tasks`` (over its prepared test split: the multiple-choice
    one scored by grades.vlm, since lm-eval's hf-multimodal backend has no log-likelihood
    for requests with images; those with a template in evals/tasks, e.g. ``shapes_gen``,
    through lm-eval) and its ``lm_eval_tasks`` (the benchmarks of evals/tasks/hub, e.g.
    ``gqa``, ``vqav2``, ``coco_caption``, ``mmstar_*``, read from the HF cache). lm-eval
    runs them with the ``eval.backend``'s multimodal model: ``hf`` -> hf-multimodal,
    ``vllm`` -> vllm-vlm (with the tensor-parallel size, memory fraction and context length
    of the LM path). Prompts go through the chat template (``--apply-chat-template``) when
    the model is fine-tuned on it (``finetune.data.prompt: chat``), so runs and the base
    model are scored in the format they are trained in."""
    e = cfg["eval"]
    chat = vlm_prompt(cfg, model) == "chat"
    dtype = cfg["models"][model]["dtype"] if e["dtype"] == "auto" else e["dtype"]
    parts = [f"--task {quote(','.join(eval_tasks(cfg, model)))}", f"--batch-size {e['batch_size']}",
             f"--dtype {dtype}"]
    if e["limit"]:
        parts.append(f"--limit {e['limit']}")
    # options that differ from the CLI's defaults (hf, seed 0, cpu, plain prompts)
    if e["backend"] != "hf":
        parts.append(f"--backend {e['backend']}")
    if e["seed"]:
        parts.append(f"--seed {e['seed']}")
    if chat:
        parts.append("--apply-chat-template")
    if e["backend"] == "vllm":
        parts += vllm_args(cfg, model)
    elif e["device"] != "cpu":
        parts.append(f"--device {quote(e['device'])}")
    return " ".join(parts)


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def quote(s: str) -> str:
    """Shell-quote a value for a rule's shell command."""
    return shlex.quote(str(s))


def write_run_config(rc: dict, path: str | Path) -> Path:
    """Write a run config as YAML, atomically."""
    from .io import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(rc, sort_keys=False))


def main(argv=None) -> int:
    """python -m grades.workflow check CONFIG.yaml — validate a workflow config and list its runs."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m grades.workflow")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a workflow config and list the runs it implies")
    c.add_argument("config")
    args = ap.parse_args(argv)
    try:
        cfg = load(yaml.safe_load(Path(args.config).read_text()))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    main = runs(cfg)
    for r in main:
        print(f"{cfg['profile']}/{r.model}/{r.slug}/seed{r.seed}")
    for r in compare_runs(cfg):
        print(f"{cfg['profile']}/{r.model}/{r.slug}/seed{r.seed}\t(compare{', shared' if r in main else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
