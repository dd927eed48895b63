"""Greedy generation through lm-eval on the parity tests' generation task (tasks/siqa_gen.yaml).

    python tests/vllm_parity/vllm_generate.py --backend hf|vllm --model DIR [--adapter DIR] \\
        --data DIR --limit N --out generations.json [--batch-size N] [--threads N]

The lm-eval arguments come from grades.evaluate (build_lm_eval_args, render_tasks,
task_manager), as in an evaluation of the harness; the adapter goes through PEFT on hf and
``lora_local_path`` on vllm. Writes ``{"backend", "adapter", "exact_match", "seconds",
"generations": [{"doc_id", "text"}]}`` (the raw generated text of each document).
A script with a ``__main__`` guard: vLLM's engine core is a spawned process."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

TASKS = Path(__file__).resolve().parent / "tasks"
TASK = "siqa_gen"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="vllm_generate.py")
    ap.add_argument("--backend", choices=["hf", "vllm"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)

    from grades.evaluate import build_lm_eval_args, quiet_libraries, render_tasks, set_offline, task_manager
    from grades.evaluate.environment import torch_threads

    set_offline()
    quiet_libraries()
    import lm_eval

    with tempfile.TemporaryDirectory(prefix="grades_gen_") as tmp:
        include = render_tasks({TASK: Path(a.data).resolve()}, Path(tmp) / "tasks", templates=TASKS,
                               cache_dir=Path(tmp) / "datasets_cache")
        kwargs = build_lm_eval_args(model=a.model, tasks=[TASK], adapter=a.adapter, backend=a.backend,
                                    batch_size=a.batch_size, dtype=a.dtype, device="cpu", limit=a.limit,
                                    task_manager=task_manager(include, include_defaults=False))
        t0 = time.perf_counter()
        with torch_threads(a.threads):
            res = lm_eval.simple_evaluate(**kwargs)
        seconds = time.perf_counter() - t0
    samples = sorted(res["samples"][TASK], key=lambda s: s["doc_id"])
    out = {"backend": a.backend, "adapter": a.adapter, "limit": a.limit,
           "exact_match": res["results"][TASK].get("exact_match,none"), "seconds": round(seconds, 3),
           "generations": [{"doc_id": s["doc_id"], "text": s["resps"][0][0]} for s in samples]}
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{a.backend}{' + adapter' if a.adapter else ''}: {len(samples)} generations, "
          f"exact match {out['exact_match']}, {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
