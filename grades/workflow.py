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
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError, closest
from .schema import validate

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


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
class Run:
    model: str
    setting: str  # display name
    seed: int

    @property
    def slug(self) -> str:
        return slug(self.setting)


def load(config: dict, schema: str | Path = SCHEMA) -> dict:
    """Validate, fill defaults, and validate every run config it implies."""
    cfg = validate(config, schema, "workflow config")
    slugs: dict[str, str] = {}
    for name in cfg["settings"]:
        s = slug(name)
        if s in slugs:
            raise ConfigError(f"workflow config: settings '{name}' and '{slugs[s]}' map to the same path '{s}'")
        if s == "base":
            raise ConfigError("workflow config: settings.base is reserved for the un-fine-tuned model")
        slugs[s] = name
    datasets = list(cfg["datasets"])
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
    if cfg["report"]["baseline"] not in cfg["settings"]:
        first = next(iter(cfg["settings"]))
        cfg["report"]["baseline"] = first
    for run in runs(cfg):
        run_config(cfg, run, model_dir="cache/x", data_dir="cache/y")  # raises on a bad field
    return cfg


def runs(cfg: dict) -> list[Run]:
    out = []
    for m, mc in cfg["models"].items():
        for s in cfg["settings"]:
            if mc["settings_only"] is not None and s not in mc["settings_only"]:
                continue
            for seed in cfg["seeds"]:
                out.append(Run(m, s, seed))
    return out


def setting_by_slug(cfg: dict, s: str) -> str:
    for name in cfg["settings"]:
        if slug(name) == s:
            return name
    raise KeyError(s)


def run_config(cfg: dict, run: Run, model_dir: str, data_dir: str) -> dict:
    """The validated run config of one (model, setting, seed)."""
    from .train import load_run_config

    mc = cfg["models"][run.model]
    st = cfg["settings"][run.setting]
    ft = deep_merge(cfg["finetune"], mc["finetune"])
    ft = deep_merge(ft, st["finetune"])
    over = mc["settings"].get(run.setting, {})
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
    try:
        return load_run_config(rc)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


# ------------------------------------------------------------ vision-language
IMAGE_DATASETS = ("synthetic:shapes",)  # data sources whose rows carry images


def is_vlm(cfg: dict, model: str) -> bool:
    """Whether a model of the workflow config is a vision-language model, decided at parse
    time: a ``tiny-vlm:`` source, an image dataset (``synthetic:shapes``), or an existing
    ``local:`` checkpoint whose config.json has a ``vision_config``."""
    mc = cfg["models"][model]
    src = mc["source"]
    if src.startswith("tiny-vlm:"):
        return True
    if cfg["datasets"][mc["dataset"]]["source"] in IMAGE_DATASETS:
        return True
    if src.startswith("local:") or Path(src).expanduser().is_dir():
        from .vlm import is_vlm_dir

        return is_vlm_dir(Path(src.removeprefix("local:")).expanduser())
    return False


def vlm_models(cfg: dict) -> list[str]:
    return [m for m in cfg["models"] if is_vlm(cfg, m)]


def model_regex(models: list[str]) -> str:
    """A wildcard constraint matching exactly these model keys (nothing when empty)."""
    return "|".join(re.escape(m) for m in models) if models else "(?!x)x"


def vlm_eval_args(cfg: dict, model: str) -> str:
    """Arguments of ``python -m grades.vlm evaluate`` for a VLM of the workflow config:
    the task name (the dataset's first eval task; the key in eval.json), batch size,
    dtype and limit of the ``eval`` section. VLMs are evaluated by our own scorer, not
    lm-eval: its hf-multimodal backend has no log-likelihood for requests with images."""
    e = cfg["eval"]
    d = cfg["datasets"][cfg["models"][model]["dataset"]]
    dtype = cfg["models"][model]["dtype"] if e["dtype"] == "auto" else e["dtype"]
    limit = f" --limit {e['limit']}" if e["limit"] else ""
    return f"--task {quote(d['eval_tasks'][0])} --batch-size {e['batch_size']} --dtype {dtype}{limit}"


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
    for r in runs(cfg):
        print(f"{cfg['profile']}/{r.model}/{r.slug}/seed{r.seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
