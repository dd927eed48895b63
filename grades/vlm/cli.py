"""The command line ``python -m grades.vlm prepare|evaluate``: build a tiny VLM, evaluate a VLM.

``python -m grades.vlm prepare --out DIR [--data DIR|SPEC] [--set k=v]`` and
``python -m grades.vlm evaluate --model DIR [--data DIR] --task T1,T2 --out eval.json
[--adapter DIR] [--backend hf|vllm] [--apply-chat-template]``. Exit code 2 on a bad
option, dataset or model directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..config import ConfigError
from .build import prepare_tiny_vlm
from .errors import VLMError
from .evaluate import evaluate_vlm

DESCRIPTION = "Vision-language models: a tiny local VLM, training batches, multiple-choice scoring."


def evaluate_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`evaluate_vlm` from the ``evaluate`` command line (pure)."""
    vllm = None
    if args.backend == "vllm":
        vllm = {"tensor_parallel_size": args.tensor_parallel_size,
                "gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": args.max_model_len}
    return {"out": args.out, "adapter": args.adapter, "task": args.task, "split": args.split, "limit": args.limit,
            "batch_size": args.batch_size, "dtype": args.dtype, "threads": args.threads,
            "samples_out": args.samples_out, "backend": args.backend, "device": args.device, "seed": args.seed,
            "apply_chat_template": args.apply_chat_template, "vllm": vllm}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m grades.vlm", description=DESCRIPTION)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build a tiny VLM checkpoint (optionally caption-aligned)")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="", help="prepared image dataset dir (tokenizer texts, alignment captions)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an option (repeatable)")
    e = sub.add_parser("evaluate", help="multiple choice (scored here) and generation tasks (lm-eval) -> eval.json")
    e.add_argument("--model", required=True)
    e.add_argument("--adapter")
    e.add_argument("--data", help="prepared image dataset dir (needed by its multiple-choice / local tasks)")
    e.add_argument("--out")
    e.add_argument("--task", default="shapes_mc",
                   help="comma-separated; the multiple-choice one (shapes_mc) is scored here, templates in "
                        "evals/tasks (shapes_gen) and the benchmarks of evals/tasks/hub (gqa, vqav2, coco_caption, "
                        "mmstar_*) run through lm-eval's multimodal backend")
    e.add_argument("--split", default="test")
    e.add_argument("--limit", type=int)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--dtype", default="float32")
    e.add_argument("--threads", type=int)
    e.add_argument("--samples-out")
    e.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                   help="lm-eval's multimodal model for the generation tasks: hf -> hf-multimodal, vllm -> vllm-vlm")
    e.add_argument("--device", default="cpu", help="hf backend: cpu or cuda")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--apply-chat-template", action="store_true", help="prompts through the model's chat template")
    e.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm only")
    e.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm only")
    e.add_argument("--max-model-len", type=int, help="vllm only")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..data import DataError

    try:
        if args.cmd == "prepare":
            from ..overrides import apply_overrides

            opts = apply_overrides({"data": args.data} if args.data else {}, args.set)
            out = prepare_tiny_vlm(args.out, **opts)
            info = json.loads((out / "grades_model.json").read_text())
            print(f"prepared a tiny {info['family']} VLM -> {out}: {info['params'] / 1e6:.2f}M parameters "
                  f"in {info['prepare_time_s']} s")
        else:
            s = evaluate_vlm(args.model, args.data, **evaluate_kwargs(args), progress=True)
            for name, t in s["tasks"].items():
                if "metric" not in t:  # the multiple-choice task scored here
                    print(f"{name}: acc {t['acc']:.4f} ± {t['acc_stderr'] or 0:.4f} (n={t['n']}, chance "
                          f"{t['chance_acc']:.3f})")
                else:
                    print(f"{name}: {t['metric']} {t['score']:.4f} ± {t['score_stderr'] or 0:.4f} "
                          f"(n={t['n']}, {t['backend']})")
    except (ConfigError, DataError, VLMError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
