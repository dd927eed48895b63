"""What each job gets: cluster resources, the training launcher and evaluation arguments.

The rules call these with the validated config and a model key; every value they return
is ready for a shell command (:func:`quote`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from pathlib import Path

from ..config import ConfigError
from .plan import deep_merge


def quote(s: str) -> str:
    """Shell-quote a value for a rule's shell command."""
    return shlex.quote(str(s))


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)


# ---------------------------------------------------------------- resources
def uses_conda(workflow) -> bool:
    """Whether Snakemake runs the jobs in their conda environments (``--use-conda``)."""
    from snakemake.settings.types import DeploymentMethod

    settings = getattr(workflow, "deployment_settings", None)
    return DeploymentMethod.CONDA in (getattr(settings, "deployment_method", None) or ())


def conda_pythonpath() -> str:
    """Where a job in the conda environment (workflow/envs/grades.yaml, dependencies only) finds
    ``grades``: the source checkout. An installed package has no checkout to point at."""
    from ..resources import REPO_ROOT

    if REPO_ROOT is None:
        raise ConfigError("--use-conda: the jobs' conda environment (workflow/envs/grades.yaml) holds the "
                          "dependencies and imports grades from a source checkout, and this grades is an installed "
                          "package; run from a checkout, or run without --use-conda (the jobs then use the "
                          "environment that runs Snakemake)")
    return str(REPO_ROOT)


def eval_gpus(cfg: dict, model: str) -> int:
    """GPUs of one evaluation job: ``eval_gpus`` when given, else sized to the model (0 without ``gpus``).

    vllm: the largest tensor-parallel size up to the model's training GPUs (one node) that
    its attention heads allow (:func:`tensor_parallel_size`); hf: the GPUs its bfloat16
    weights need with a third to spare, the model spread over them (``parallelize``)."""
    mc = cfg["models"][model]
    if mc["eval_gpus"] is not None:
        return mc["eval_gpus"]
    if mc["gpus"] <= 0:
        return 0
    try:
        from .memory import model_arch

        arch = model_arch(cfg, model)
    except ValueError:  # no config.json and no size_b: one GPU, as before
        return 1
    most = min(mc["gpus"], cfg["jobs"]["gpus_per_node"])
    if cfg["eval"]["backend"] == "vllm":
        return tensor_parallel_size(arch, most)
    need = math.ceil(arch.params * 2 * 4 / 3 / (cfg["jobs"]["gpu_memory_gib"] * (1 << 30)))
    return max(1, min(most, 1 << max(0, need - 1).bit_length()))


def tensor_parallel_size(arch, most: int) -> int:
    """The largest size up to ``most`` that vLLM can split the model's attention over: it divides the
    query heads (of a vision tower too), and the key/value heads divide it or it divides them."""
    stacks = [arch.text] + ([arch.vision] if arch.vision is not None else [])
    for t in range(most, 0, -1):
        if all(d.heads % t == 0 and (d.kv_heads % t == 0 or t % d.kv_heads == 0) for d in stacks):
            return t
    return 1


def train_nodes(cfg: dict, model: str) -> int:
    """Nodes of one training job: 1 up to ``jobs.gpus_per_node`` GPUs, else GPUs / gpus_per_node."""
    n, per = cfg["models"][model]["gpus"], cfg["jobs"]["gpus_per_node"]
    return max(1, math.ceil(n / per))


def job_resources(cfg: dict, model: str, rule: str) -> dict:
    """Cluster resources of one job: ``{"gpu", "nodes", "tasks", "slurm_extra", "mem_mb", "runtime", "cpus"}``.

    ``rule`` is ``train``, ``evaluate`` or ``prepare``. Scaled by the model's ``size_b``
    (see the ``jobs`` block of the workflow schema); ``models.<m>.resources.<rule>``
    overrides any of them. ``cpus`` 0 means "all local cores" (the Snakefile decides).
    A job asks for one node (its torchrun is ``--standalone``); a training job with more
    GPUs than a node has asks for ``nodes`` nodes with ``gpus_per_node`` GPUs and one task
    each (``gpu`` 0, ``--gpus-per-node`` in ``slurm_extra``), ``mem_mb`` and ``cpus`` per node."""
    if rule not in ("train", "evaluate", "prepare"):
        raise ValueError(f"no job resources for rule {rule!r}")
    mc = cfg["models"][model]
    j = cfg["jobs"][rule]
    gpu = {"train": mc["gpus"], "evaluate": eval_gpus(cfg, model), "prepare": 0}[rule]
    nodes = train_nodes(cfg, model) if rule == "train" else 1
    per_node = gpu // nodes
    size = mc["size_b"] or 0.0
    procs = max(1, per_node) if rule == "train" else 1
    out = {
        "gpu": gpu if nodes == 1 else 0,
        "nodes": nodes,
        "tasks": nodes if nodes > 1 else 0,  # one launcher per node (0: the executor's default)
        "slurm_extra": f"--gpus-per-node={per_node}" if nodes > 1 else "",
        "mem_mb": int(math.ceil(j["mem_mb"] + j["mem_mb_per_b"] * size * procs)),
        "runtime": int(math.ceil(j["runtime"] + j["runtime_per_b"] * size)),
        "cpus": j["cpus_per_gpu"] * per_node if gpu else j["cpus"],
    }
    out.update(mc["resources"].get(rule, {}))
    return out


RDZV_PORT = 29500


def train_launcher(cfg: dict, model: str, python: str) -> str:
    """The command that starts ``grades.train`` for one model: the interpreter, a one-process-per-GPU
    launcher on one node (``torchrun --standalone``), or, for more GPUs than a node has, one torchrun
    per node (``srun``) meeting at a rendezvous on the job's first node (SLURM's environment)."""
    n = cfg["models"][model]["gpus"]
    py = quote(python)
    if n <= 1:
        return f"{py} -m grades.train"
    la = cfg["launcher"]
    extra = f" {la['args']}" if la["args"] else ""
    nodes = train_nodes(cfg, model)
    if nodes > 1:
        per = cfg["jobs"]["gpus_per_node"]
        if n % per:
            raise ConfigError(f"workflow config: models.{model}.gpus = {n} spans {nodes} nodes of "
                              f"{per} GPUs (jobs.gpus_per_node): use a multiple of {per}")
        if la["name"] != "torchrun":
            raise ConfigError(f"workflow config: models.{model} trains on {nodes} nodes: launcher {la['name']!r} "
                              "is not supported across nodes; use launcher: {name: torchrun}")
        head = '"$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"'
        return (f"srun --nodes {nodes} --ntasks-per-node 1 {py} -m torch.distributed.run --nnodes {nodes} "
                f"--nproc_per_node {per} --rdzv_backend c10d --rdzv_endpoint {head}:{RDZV_PORT} "
                f'--rdzv_id "$SLURM_JOB_ID"{extra} -m grades.train')
    if la["name"] == "accelerate":
        return (f"{py} -m accelerate.commands.launch --num_processes {n} --num_machines 1"
                f"{extra} --module grades.train")
    return f"{py} -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node {n}{extra} -m grades.train"


# ---------------------------------------------------------------- evaluation
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
    from ..data.hub import IMAGE_FORMATS

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
    if src.startswith("local:") or os.path.isdir(os.path.expanduser(src)):
        from ..models import is_vlm_dir

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
