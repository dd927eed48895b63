"""Download every Hub model and dataset of a workflow profile, once, where the Hub is reachable.

Compute nodes of a cluster usually have no internet. Run this on a login node (or use
the workflow's ``prefetch`` target, a local rule); afterwards every job runs with
``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1`` and reads the Hugging Face cache
(``HF_HOME``, which must be on a file system the compute nodes see).

What it fetches (:func:`plan`):

* ``model``    every ``hf:ORG/NAME`` model source of an enabled model, and both backbones
  of a ``compose-vlm:`` source (``options.vision``, ``options.language``):
  ``huggingface_hub.snapshot_download`` without duplicate weight formats
  (``original/``, ``consolidated*``, ``*.pth``, GGUF, ONNX, ...).
* ``dataset``  every ``hf-dataset:ORG/NAME`` training source: the same
  ``datasets.load_dataset`` call the prepare step makes (one per Hub config of a
  ``cauldron`` dataset's ``subsets``), so its Arrow cache is ready.
* ``lm-eval``  the dataset behind every lm-eval task the profile scores, read from the
  task's YAML (lm-eval's own, or ours in evals/tasks/hub and evals/tasks/commonsense: ``dataset_path``,
  ``dataset_name``, ``dataset_kwargs``, and any ``metadata.extra_datasets`` it reads
  besides, e.g. GQA's pictures) and loaded the way lm-eval loads it.

CLI::

    python -m grades.prefetch --workflow-config config/paper.yaml [--dry-run] [--no-vlm]
        [--groups qwen3-sizes] [--only model,lm-eval] [--out cache/paper/prefetch.json]

``--dry-run`` prints the plan and touches nothing. The manifest (``--out``, written
atomically) records each item, the snapshot revision it resolved to, and the time taken;
pin those revisions in the config (``options.revision``) to freeze a reproduction.
Gated models (Llama, Mistral) need an accepted licence and ``huggingface-cli login``
(or ``HF_TOKEN``) first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import ConfigError

KINDS = ("model", "dataset", "lm-eval")
#: weight formats that duplicate the safetensors shards (or are not loadable here)
MODEL_IGNORE = ["original/*", "consolidated*", "*.pth", "*.pt", "*.gguf", "*.onnx", "*.onnx_data", "onnx/*",
                "openvino/*", "*.msgpack", "*.h5", "flax_model*", "tf_model*", "*.ot"]


@dataclass(frozen=True)
class Item:
    kind: str  # one of KINDS
    id: str  # Hub repo id
    name: str | None = None  # dataset config name
    split: str | None = None
    revision: str | None = None
    kwargs: tuple = ()  # extra load_dataset keyword arguments (sorted items)
    used_by: tuple[str, ...] = field(default=(), compare=False)

    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in (("name", self.name), ("split", self.split),
                                                  ("revision", self.revision)) if v)
        return f"{self.kind:<11} {self.id}{extra}"


# ------------------------------------------------------------------ plan
def lm_eval_task_datasets(tasks: list[str]) -> dict[str, list[dict]]:
    """``{task: [{"path", "name", "kwargs", "split"}, ...]}`` from the task YAMLs (functions
    unresolved): the task's dataset, then its ``metadata.extra_datasets``. Tasks of
    evals/tasks/hub (the VLM benchmarks) and evals/tasks/commonsense (the commonsense generation
    tasks) are looked up there, the others in lm-eval's index."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    from .evaluate import STANDARD_TASKS, shipped_tasks
    from .vlm import hub_tasks

    hub = {**hub_tasks(), **shipped_tasks()}  # ours: evals/tasks/hub and evals/tasks/commonsense
    out: dict[str, list[dict]] = {}
    for t in [t for t in tasks if t in hub]:
        out[t] = _yaml_datasets(t, load_yaml(str(hub[t]), resolve_func=False, recursive=True), hub[t])
    tasks = [t for t in tasks if t not in hub]
    if not tasks:
        return out
    if all(t in STANDARD_TASKS for t in tasks):  # index only their folders: a second, not ten
        import lm_eval

        root = Path(lm_eval.__file__).parent / "tasks"
        dirs = [root / s for s in ("super_glue/boolq", "piqa", "siqa", "hellaswag", "winogrande", "openbookqa", "arc")]
        tm = TaskManager(include_path=[str(d) for d in dirs], include_defaults=False)
    else:
        tm = TaskManager()
    for t in tasks:
        entry = tm.task_index.get(t)
        if entry is None or entry.yaml_path is None:
            raise ConfigError(f"lm-eval task '{t}' has no YAML in lm-eval's task index; cannot tell its dataset")
        out[t] = _yaml_datasets(t, load_yaml(entry.yaml_path, resolve_func=False, recursive=True), entry.yaml_path)
    return out


def _yaml_datasets(task: str, cfg: dict, path) -> list[dict]:
    if not cfg.get("dataset_path"):
        raise ConfigError(f"lm-eval task '{task}' ({path}) names no dataset_path")
    out = [{"path": cfg["dataset_path"], "name": cfg.get("dataset_name"),
            "kwargs": dict(cfg.get("dataset_kwargs") or {}), "split": None}]
    for x in (cfg.get("metadata") or {}).get("extra_datasets") or []:
        out.append({"path": x["path"], "name": x.get("name"), "kwargs": dict(x.get("kwargs") or {}),
                    "split": x.get("split")})
    return out


def plan(cfg: dict, include_vlm: bool = True, task_datasets: Callable = lm_eval_task_datasets) -> list[Item]:
    """Every Hub download a validated workflow config (``grades.workflow.load``) needs, deduplicated.

    ``include_vlm=False`` leaves out the vision-language models (grades.workflow.is_vlm) and
    what only they use."""
    from . import workflow as gw
    from .data import parse_spec as data_spec
    from .models import parse_spec as model_spec

    items: dict[Item, set[str]] = {}

    def add(item: Item, user: str) -> None:
        items.setdefault(item, set()).add(user)

    enabled = [m for m in gw.enabled_models(cfg) if include_vlm or not gw.is_vlm(cfg, m)]
    used_data: dict[str, list[str]] = {}
    for m in enabled:
        mc = cfg["models"][m]
        kind, arg = model_spec(mc["source"])
        if kind == "hf":
            add(Item("model", arg, revision=mc["options"].get("revision") or None), f"models.{m}")
        elif kind == "compose-vlm":
            for part in ("vision", "language"):
                sub, sub_arg = model_spec(mc["options"][part])
                if sub == "hf":
                    add(Item("model", sub_arg), f"models.{m}.options.{part}")
        used_data.setdefault(mc["dataset"], []).append(m)
    tasks: dict[str, list[str]] = {}
    for d, users in used_data.items():
        dc = cfg["datasets"][d]
        kind, arg = data_spec(dc["source"])
        if kind == "hf-dataset":
            o = dc["options"]
            for name in o.get("subsets") or [o.get("config") or None]:
                add(Item("dataset", arg, name=name, split=o.get("split", "train"),
                         revision=o.get("revision") or None), f"datasets.{d}")
        for t in dc["lm_eval_tasks"]:
            tasks.setdefault(t, []).append(f"datasets.{d}")
    if tasks:
        for t, dss in task_datasets(list(tasks)).items():
            for ds in dss:
                add(Item("lm-eval", ds["path"], name=ds["name"], split=ds.get("split"),
                         kwargs=tuple(sorted(ds["kwargs"].items()))), f"lm-eval:{t}")
    out = [Item(**{**asdict(i), "kwargs": i.kwargs, "used_by": tuple(sorted(u))}) for i, u in items.items()]
    return sorted(out, key=lambda i: (KINDS.index(i.kind), i.id, i.name or ""))


# ------------------------------------------------------------------ fetch
def _snapshot(item: Item) -> dict:
    from huggingface_hub import snapshot_download

    if item.kind == "model":
        path = snapshot_download(item.id, revision=item.revision, ignore_patterns=MODEL_IGNORE)
    else:
        path = snapshot_download(item.id, repo_type="dataset", revision=item.revision)
    return {"path": str(path), "resolved_revision": Path(path).name}


def _load_dataset(item: Item) -> dict:
    import datasets

    kw: dict[str, Any] = dict(item.kwargs)
    if item.name:
        kw["name"] = item.name
    if item.split:
        kw["split"] = item.split
    if item.revision:
        kw["revision"] = item.revision
    ds = datasets.load_dataset(item.id, **kw)
    rows = ({k: len(v) for k, v in ds.items()} if isinstance(ds, dict) else len(ds))
    return {"rows": rows}


FETCHERS: dict[str, Callable[[Item], dict]] = {
    "model": _snapshot, "dataset": _load_dataset, "lm-eval": _load_dataset,
}


def go_online() -> None:
    """Allow Hub access in this process (the workflow's jobs run offline)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "0"
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as hc

        hc.HF_HUB_OFFLINE = False
    if "datasets" in sys.modules:
        import datasets.config as dc

        dc.HF_HUB_OFFLINE = False
        if hasattr(dc, "HF_DATASETS_OFFLINE"):
            dc.HF_DATASETS_OFFLINE = False


def fetch(items: list[Item], out: str | Path | None = None, keep_going: bool = False,
          log=print) -> dict:
    """Download each item (FETCHERS); write and return the manifest. Raises on the first
    failure unless ``keep_going`` (then the manifest lists the failures and it raises at the end)."""
    go_online()
    records, failed = [], []
    for n, item in enumerate(items, 1):
        log(f"[prefetch {n}/{len(items)}] {item.label()}")
        t0 = time.perf_counter()
        rec = {**asdict(item), "kwargs": dict(item.kwargs), "used_by": list(item.used_by)}
        try:
            rec.update(FETCHERS[item.kind](item), status="ok")
        except Exception as e:  # noqa: BLE001 - reported with the item it belongs to
            rec.update(status="failed", error=f"{type(e).__name__}: {e}")
            failed.append(item)
            log(f"[prefetch] FAILED {item.label()}: {rec['error']}")
            if not keep_going:
                _write(out, records + [rec])
                raise RuntimeError(f"prefetch of {item.kind} {item.id} failed: {rec['error']}") from e
        rec["time_s"] = round(time.perf_counter() - t0, 2)
        records.append(rec)
    manifest = _write(out, records)
    if failed:
        raise RuntimeError(f"prefetch: {len(failed)} of {len(items)} downloads failed: "
                           + ", ".join(f"{i.kind} {i.id}" for i in failed))
    return manifest


def _write(out, records) -> dict:
    manifest = {"items": records, "hf_home": os.environ.get("HF_HOME"), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if out is not None:
        from .io import atomic_write_json

        atomic_write_json(out, manifest)
    return manifest


# ------------------------------------------------------------------ CLI
def main(argv=None) -> int:
    from . import workflow as gw

    ap = argparse.ArgumentParser(prog="python -m grades.prefetch", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--workflow-config", help="workflow config YAML (e.g. config/paper.yaml)")
    src.add_argument("--config-json", help="a workflow config as a JSON string (used by the workflow's rule)")
    ap.add_argument("--groups", default=None, help="comma-separated optional model groups to include")
    ap.add_argument("--no-vlm", action="store_true",
                    help="leave out the vision-language models and the data only they use")
    ap.add_argument("--only", default=None, help=f"comma-separated kinds to fetch, of {list(KINDS)}")
    ap.add_argument("--dry-run", action="store_true", help="print what would be downloaded; download nothing")
    ap.add_argument("--keep-going", action="store_true", help="continue after a failed download")
    ap.add_argument("--out", default=None, help="manifest JSON (default cache/<profile>/prefetch.json)")
    args = ap.parse_args(argv)
    try:
        raw = gw.read_config(args.workflow_config) if args.workflow_config else json.loads(args.config_json)
        if args.groups is not None:
            raw["groups"] = [g for g in args.groups.split(",") if g]
        cfg = gw.load(raw)
        items = plan(cfg, include_vlm=not args.no_vlm)
        if args.only:
            kinds = [k.strip() for k in args.only.split(",") if k.strip()]
            bad = [k for k in kinds if k not in KINDS]
            if bad:
                raise ConfigError(f"--only: unknown kind(s) {bad}; choose from {list(KINDS)}")
            items = [i for i in items if i.kind in kinds]
    except (ConfigError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or f"cache/{cfg['profile']}/prefetch.json"
    if args.dry_run:
        for i in items:
            print(f"{i.label()}    <- {', '.join(i.used_by)}")
        print(f"{len(items)} downloads ({', '.join(f'{sum(i.kind == k for i in items)} {k}' for k in KINDS)}); "
              f"dry run: nothing fetched, {out} not written")
        return 0
    try:
        fetch(items, out, keep_going=args.keep_going, log=lambda s: print(s, flush=True))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"prefetched {len(items)} items; manifest {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
