"""The command line ``python -m grades.evaluate``: its options and ``main``.

Exit code 0, or 2 with a one-line error for bad inputs (:mod:`.errors`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .backend import BACKENDS
from .errors import EvalConfigError
from .lora_check import CHECK_DOCS
from .run import evaluate
from .tasks import STANDARD_TASKS


def parse_limit(s: str) -> int | float:
    """``--limit``: a number of documents (an int >= 1) or a fraction (< 1)."""
    v = float(s)
    return int(v) if v >= 1 and v.is_integer() else v


def parse_batch(s: str) -> int | str:
    """``--batch-size``: an int, or lm-eval's ``auto`` / ``auto:N``."""
    return s if s.startswith("auto") else int(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m grades.evaluate",
        description="Multiple-choice evaluation of a (LoRA-adapted) causal LM through lm-eval.")
    p.add_argument("--model", required=True, help="saved Hugging Face model dir (base model)")
    p.add_argument("--adapter", help="PEFT adapter dir (with adapter_config.json)")
    p.add_argument("--tokenizer", help="tokenizer dir, if not saved in --model")
    p.add_argument("--tasks", required=True,
                   help=f"comma-separated; local: world_mc, siqa_local; standard: {','.join(STANDARD_TASKS)}")
    p.add_argument("--data", help="prepared dataset dir for the local tasks, or task=DIR[,task=DIR]")
    p.add_argument("--out", help="eval.json path (written atomically)")
    p.add_argument("--backend", choices=BACKENDS, default="hf")
    p.add_argument("--batch-size", type=parse_batch, default=16)
    p.add_argument("--limit", type=parse_limit, default=None, help="first N docs per task (or a fraction < 1)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu", help="hf backend only (vllm: CUDA_VISIBLE_DEVICES)")
    p.add_argument("--num-fewshot", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-out", help="per-doc JSONL with choice loglikelihoods")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm only")
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="GPUs one evaluation uses: vLLM's tensor parallelism; hf spreads the model's layers "
                        "over them (parallelize)")
    p.add_argument("--max-model-len", type=int, default=None, help="vllm only")
    p.add_argument("--merge-adapter", action="store_true",
                   help="merge --adapter into --model first and evaluate the merged model")
    p.add_argument("--merge-dir", help="where the temporary merged model goes (default $GRADES_MERGE_DIR or /tmp)")
    p.add_argument("--lora-check", type=int, default=CHECK_DOCS, metavar="N",
                   help="vllm with --adapter: score the first N documents of each task on hf too and "
                        "merge the adapter if vLLM's log-likelihoods disagree (0: no check; "
                        f"default {CHECK_DOCS})")
    p.add_argument("--lora-check-tol", type=float, default=None, metavar="NATS",
                   help="largest per-choice |hf - vllm| log-likelihood that agrees (default by dtype: "
                        "float32 0.05, half precision 0.5)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the run (default: torch's; set it on shared CPUs)")
    p.add_argument("-v", "--verbose", action="store_true", help="lm-eval INFO logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = evaluate(
            args.model, args.tasks, data=args.data, out=args.out, adapter=args.adapter,
            backend=args.backend, batch_size=args.batch_size, limit=args.limit,
            dtype=args.dtype, device=args.device, num_fewshot=args.num_fewshot, seed=args.seed,
            samples_out=args.samples_out, gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.tensor_parallel_size, max_model_len=args.max_model_len,
            threads=args.threads, tokenizer=args.tokenizer, quiet=not args.verbose,
            merge=args.merge_adapter, merge_dir=args.merge_dir, lora_check=args.lora_check,
            lora_check_tol=args.lora_check_tol)
    except EvalConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0
