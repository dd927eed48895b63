"""Views of a bench result: summary.md, the compact headline tables (--compact) and memory.json."""

from __future__ import annotations

import math

from .overhead import RELEASED


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.2f}%"


def _f(x, nd=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / 2 ** 20:.1f} MiB"


def summary_md(res: dict) -> str:
    meta = res["meta"]
    L = ["# GradES performance benchmark", "",
         f"`python -m grades.bench{' --quick' if meta['quick'] else ''}` — {meta['finished']} — "
         f"torch {meta['versions']['torch']}, {meta['threads']} thread(s), {meta['cpu_count']} CPU(s), "
         f"load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end; "
         f"{meta['elapsed_s']:.0f} s in all.", ""]
    if meta.get("updated_from"):
        em = meta["updated_from"].get("earlier_meta") or {}
        L += [f"Sections {', '.join(meta['updated_from']['sections_kept'])} come from the earlier run of "
              f"{em.get('finished', '?')} (load average {em.get('loadavg_start')} at start, "
              f"{em.get('loadavg_end')} at end, {em.get('elapsed_s', 0):.0f} s); the others were rerun "
              f"with --update.", ""]
    if meta.get("contention_note"):
        L += [f"**Note:** {meta['contention_note']}", ""]
    L += ["Ratios come from one process: variants interleaved round by round (rotating order), "
          "medians of timed steps after warm-up.", ""]
    for o in res.get("overhead", []):
        L += [f"## 1a. Monitoring overhead — {o['model']} ({o['params'] / 1e6:.1f}M params, "
              f"{o['components']} matrices, batch {o['batch_size']} x {o['seq_len']})", "",
              f"Plain step: {o['baseline_step_s'] * 1e3:.1f} ms. *direct* = the monitor's own time / plain step; "
              f"*A/B* = whole step vs plain, the median over rounds of the per-round ratio (includes indirect effects and noise; the step-time spread (MAD) is shown).", "",
              "| variant | monitor ms | direct | A/B | noise | state | bytes/tracked param | vs weight copy |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in o["variants"]:
            L.append(f"| {r['variant']} | {r['hook_s'] * 1e3:.2f} | {_pct(r['overhead_direct'])} | "
                     f"{_pct(r['overhead_ab'])} | {_f(r['step_noise_mad_rel'] * 100, 1)}% | {_mb(r['state_bytes'])} | "
                     f"{_f(r['state_bytes_per_tracked_param'], 3)} | {_f(r['state_vs_weight_copy'], 3)}x |")
        k = o.get("kernels")
        if k:
            L += ["", f"Delta-signal arithmetic alone over the {k['elements'] / 1e6:.1f}M tracked entries "
                  f"(median ms; ns per entry):", "",
                  "| " + " | ".join(k["ms"]) + " |", "|" + "---:|" * len(k["ms"]),
                  "| " + " | ".join(f"{v:.1f} ({k['ns_per_element'][n]:.2f})" for n, v in k["ms"].items()) + " |"]
        L += [""] + [f"- {n}" for n in o["notes"]] + ([""] if o["notes"] else [])
    for s in res.get("speedup", []):
        L += [f"## 1b. Realised vs predicted speedup — {s['model']} (batch {s['batch_size']} x {s['seq_len']})", "",
              f"Frozen: {s['freeze_order']}. *savings* = backward truncation + LoRA merge-on-freeze + optimizer "
              f"pruning (grades.savings). Speedups relative to 0% frozen (median over rounds of the per-round "
              f"ratio); efficiency = realised / predicted (FLOPs); the fwd+bwd columns leave the optimizer "
              f"step out.", ""]
        for mode, m in s["modes"].items():
            L += [f"**{mode}** ({m['trainable_params'] / 1e6:.2f}M trainable)", "",
                  "| frozen | variant | step ms | fwd+bwd ms | opt ms | predicted | realised | efficiency | "
                  "eff. fwd+bwd | cut layers | merged | pruned |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in m["rows"]:
                L.append(f"| {r['frozen_pct']}% | {r['variant']} | {r['step_s'] * 1e3:.1f} | {r['fwd_bwd_s'] * 1e3:.1f} | "
                         f"{r['optimizer_s'] * 1e3:.1f} | {r['predicted_speedup']:.3f}x | {r['realised_speedup']:.3f}x | "
                         f"{r['efficiency']:.3f} | {r['efficiency_fwd_bwd']:.3f} | {r['truncated_layers']} | "
                         f"{r['merged_modules']} | {r['pruned_params']} |")
            L.append("")
            mem = m.get("optimizer_memory")
            if mem:
                L += ["Optimizer memory given back (AdamW state bytes summed over the optimizer's state, "
                      "freezing through the Freezer):", "",
                      "| frozen | optimizer state | given back |", "|---:|---:|---:|"]
                for r in mem["rows"]:
                    L.append(f"| {r['frozen_pct']}% | {_mb(r['optimizer_state_bytes'])} | "
                             f"{_mb(r['released_bytes'])} ({_pct(r['released_fraction'])}) |")
                L.append("")
    est = res.get("estimator")
    if est:
        L += ["## 1c. Estimators against the exact signal", "", f"Run: {est['run']}.", "",
              f"{est['method']}; grace step {est['grace_step']}, tau {est['tau']:.4g} ({est['tau_note']}).", "",
              "| estimator | state vs weight copy | rel. error median | p90 | max | frozen (exact / est.) | "
              "agree within 2 checks | max check diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k, e in est["estimators"].items():
            r, a = e["relative_error"], e["agreement"]
            L.append(f"| {k} | {e['state_vs_weight_copy']:.4f}x | {_pct(r['median'])} | {_pct(r['p90'])} | "
                     f"{_pct(r['max'])} | {a['frozen_by_exact']} / {a['frozen_by_estimate']} | "
                     f"{a['agreeing']}/{a['components']} | {a['max_check_difference']} |")
        L.append("")
    wf = res.get("workflows")
    if wf:
        L += ["## 1d. End-to-end workflow time", "", "| profile | jobs | sum of job times | span | by rule |",
              "|---|---:|---:|---:|---|"]
        for prof, w in wf.items():
            if not w["run"]:
                L.append(f"| {prof} | — | — | — | {w['note']} |")
                continue
            rules = ", ".join(f"{k} {v['seconds']:.0f} s ({v['jobs']})" for k, v in sorted(w["rules"].items()))
            span = "n/a" if w["span_seconds"] is None else f"{w['span_seconds']:.0f} s"
            L.append(f"| {prof} | {w['jobs']} | {w['sum_job_seconds']:.0f} s | {span} | {rules} |")
        L += ["", "Sum = every job's wall time added (jobs may overlap); span = first job start to last job end.", ""]
    v = res.get("verdicts", [])
    if v:
        L += ["## Targets", "", "| target | value | met | by | why |", "|---|---:|:---:|---:|---|"]
        for t in v:
            val = t["value"] if isinstance(t["value"], str) else f"{t['value']:.4f}"
            by = "" if not t.get("by") else f"{t['by']:.4f}"
            L.append(f"| {t['target']} | {val} | {'yes' if t['met'] else '**no**'} | {by} | {t.get('why') or ''} |")
        L.append("")
    return "\n".join(L)


def compact_md(res: dict) -> str:
    """The headline tables (README "Performance"): ``python -m grades.bench --compact results/bench/bench.json``."""
    L = []
    ov = res.get("overhead", [])
    if ov:
        cols = [v for v in ("grad_delta_l1", "grad_delta_l1+bf16", "grad_delta_l1+sampled", "grad_l1",
                            "weight_delta_l1", RELEASED)]
        L += ["Monitoring overhead per step, checked every step (direct: the monitor's time / a plain step; "
              "A/B in brackets), and GradES state in bytes per tracked parameter:", "",
              "| model | plain step | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        for o in ov:
            rows = {r["variant"]: r for r in o["variants"]}
            cells = [(f"{100 * rows[c]['overhead_direct']:.2f}% ({100 * rows[c]['overhead_ab']:+.1f}%)"
                      if c in rows else "n/a") for c in cols]
            L.append(f"| {o['model']} | {o['baseline_step_s']:.2f} s | " + " | ".join(cells) + " |")
            cells = [(f"{rows[c]['state_bytes_per_tracked_param']:.3f} B ({rows[c]['state_vs_weight_copy']:.3f}x)"
                      if c in rows else "n/a") for c in cols]
            L.append(f"| {o['model']} state | | " + " | ".join(cells) + " |")
        L.append("")
    sp = res.get("speedup", [])
    if sp:
        L += ["Realised speedup of a step (predicted by FLOPs in brackets; efficiency = realised / predicted) "
              "with the lowest layers' matrices frozen; plain freeze / with all savings:", "",
              "| model | mode | 25% plain | 25% savings | 50% plain | 50% savings | 100% plain | 100% savings |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for s in sp:
            for mode, m in s["modes"].items():
                by = {(r["frozen_pct"], r["variant"]): r for r in m["rows"]}
                cells = []
                for f in (25, 50, 100):
                    for v in ("plain", "savings"):
                        r = by.get((f, v))
                        cells.append("n/a" if r is None else
                                     f"{r['realised_speedup']:.2f}x ({r['predicted_speedup']:.2f}x) e={r['efficiency']:.2f}")
                L.append(f"| {s['model']} | {mode} | " + " | ".join(cells) + " |")
        L.append("")
        mem = [(s["model"], m["optimizer_memory"]) for s in sp for mode, m in s["modes"].items()
               if m.get("optimizer_memory")]
        if mem:
            L += ["AdamW state given back as matrices freeze (FP, measured on the optimizer):", "",
                  "| model | 25% | 50% | 100% |", "|---|---:|---:|---:|"]
            for model, mm in mem:
                by = {r["frozen_pct"]: r for r in mm["rows"]}
                L.append(f"| {model} | " + " | ".join(
                    f"{by[f]['released_bytes'] / 2 ** 20:.0f} MiB ({100 * by[f]['released_fraction']:.0f}%)"
                    if f in by else "n/a" for f in (25, 50, 100)) + " |")
            L.append("")
    est = res.get("estimator")
    if est:
        L += [f"Estimators against the exact ||G_t - G_(t-1)||_1 on {est['run']} (shadow run, tau {est['tau']:.4g}):", "",
              "| estimator | state vs weight copy | relative error median / p90 / max | freezes (exact / estimate) | "
              "same matrices within 2 checks |", "|---|---:|---:|---:|---:|"]
        for k, e in est["estimators"].items():
            r, a = e["relative_error"], e["agreement"]
            L.append(f"| {k} | {e['state_vs_weight_copy']:.4f}x | {100 * r['median']:.2f}% / {100 * r['p90']:.2f}% / "
                     f"{100 * r['max']:.1f}% | {a['frozen_by_exact']} / {a['frozen_by_estimate']} | "
                     f"{a['agreeing']}/{a['components']} (max gap {a['max_check_difference']}) |")
        L.append("")
    wf = res.get("workflows")
    if wf:
        L += ["End-to-end workflow time (Snakemake benchmark files):", "", "| profile | jobs | sum of job times | span |",
              "|---|---:|---:|---:|"]
        for prof, w in wf.items():
            if w["run"]:
                L.append(f"| {prof} | {w['jobs']} | {w['sum_job_seconds'] / 60:.1f} min | "
                         f"{(w['span_seconds'] or 0) / 60:.1f} min |")
            else:
                L.append(f"| {prof} | not run | | |")
        L.append("")
    return "\n".join(L)


def memory_section(res: dict) -> dict:
    """memory.json: GradES state (from 1a), optimizer memory given back (from 1b), estimator (1c)."""
    return {
        "state": [{"model": o["model"], "tracked_params": o["tracked_params"],
                   "weight_copy_bytes": o["weight_copy_bytes"], "released_state_bytes": o["released_state_bytes"],
                   "variants": [{k: r[k] for k in ("variant", "state_bytes", "state_bytes_per_tracked_param",
                                                   "state_vs_weight_copy", "state_vs_released")}
                                for r in o["variants"]]} for o in res.get("overhead", [])],
        "optimizer": [{"model": s["model"], "mode": mode, **m["optimizer_memory"]}
                      for s in res.get("speedup", []) for mode, m in s["modes"].items() if m.get("optimizer_memory")],
        "estimator": res.get("estimator"),
    }
