"""Our numbers in the paper's layout, beside the paper's own (``results/paper/``).

The paper's language table is models x methods x eight benchmarks + the average, in
percent with two decimals; its efficiency summary gives training time, speedup over FP
and a FLOPs figure for Qwen3-14B and Qwen3-0.6B. From the run files of a profile and
the model-name map ``report.paper_models`` (our key -> the paper's name) this writes:

    paper_accuracy.{csv,md}     ours, in exactly the paper's layout, one table per protocol
    paper_reference.md          the paper's table (results/paper/accuracy_language.csv)
    paper_comparison.{csv,md}   every cell: ours, paper, ours - paper; the average too; per
                                protocol, benchmarks failing the split check flagged; whether
                                the paper's value is inside our 95% interval (reproduced), and
                                "k of n cells reproduced" per model (grades.report.claims)
    paper_splits.{csv,md}       the split check (grades.report.splits): do the paper's values
                                fit the number of items we scored?
    paper_efficiency.{csv,md}   train time, speedup vs FP, FLOPs ratio: ours beside the paper's
    paper_multimodal.{csv,md}   the paper's VLM table (results/paper/multimodal.csv), ours beside
                                where a mapped VLM has runs on those benchmarks

Our average is the mean of our eight benchmarks under one protocol. The paper's printed
averages are taken as printed (one is off by 0.01 from the mean of its row:
results/paper/README.md). Each eval row says its benchmark (eval.json's ``benchmark``;
for older files the task name mapped to the paper's, ``social_iqa`` -> ``siqa``) and
protocol (``commonsense-generation``: the cs_* tasks, exact match of the parsed answer;
``loglikelihood``: lm-eval's standard tasks, acc); every table names them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..io import atomic_write_text
from .claims import paper_cells, reproduced_summary, speed_cell
from .splits import flagged, split_check, splits_markdown
from .stats import reproduced
from ..workflow import PAPER_TABLES  # noqa: F401 - the file names the workflow declares

BENCHMARKS = ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "openbookqa", "arc_challenge", "arc_easy"]
HEADERS = {"boolq": "BoolQ", "piqa": "PIQA", "siqa": "SIQA", "hellaswag": "HellaSwag", "winogrande": "WinoGrande",
           "openbookqa": "OBQA", "arc_challenge": "ARC-c", "arc_easy": "ARC-e", "avg": "Avg"}
TASK_TO_BENCHMARK = {"social_iqa": "siqa", "siqa_local": "siqa"}
METHODS = ["FP", "FP+ES", "FP+GradES", "LoRA", "LoRA+ES", "LoRA+GradES"]
PAPER_MODEL_ORDER = ["Qwen3-14B", "Phi4-14B", "Qwen3-0.6B", "Llama-3.1-8B", "Mistral-7B"]


# ------------------------------------------------------------------ inputs
def load_paper(paper_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accuracy, efficiency) as published: accuracy has model, method, benchmark, accuracy."""
    d = Path(paper_dir)
    acc = pd.read_csv(d / "accuracy_language.csv")
    eff = pd.read_csv(d / "efficiency.csv")
    return acc, eff


LONG = ["model", "method", "protocol", "benchmark", "accuracy", "task", "metric", "split", "n"]
#: the protocol the paper's numbers most likely come from (config/paper.yaml): compared first
PRIMARY = "commonsense-generation"


def ours_long(evals: pd.DataFrame, paper_models: dict[str, str]) -> pd.DataFrame:
    """Our eval rows (grades.report.runs.collect) -> model (paper name), method, protocol, benchmark,
    accuracy (%), task, metric, split, n (items scored).

    Only models in ``paper_models`` and the paper's benchmarks; the mean over seeds."""
    if evals.empty:
        return pd.DataFrame(columns=LONG)
    e = evals[evals["model"].isin(paper_models) & evals["setting"].ne("Base")].copy()
    given = e["benchmark"] if "benchmark" in e else pd.Series(None, index=e.index, dtype=object)
    e["benchmark"] = [b if isinstance(b, str) and b else TASK_TO_BENCHMARK.get(t, t) for b, t in zip(given, e["task"])]
    e["protocol"] = e["protocol"].fillna("loglikelihood") if "protocol" in e else "loglikelihood"
    for col in ("metric", "split"):
        if col not in e:
            e[col] = None
    e = e[e["benchmark"].isin(BENCHMARKS)]
    if e.empty:
        return pd.DataFrame(columns=LONG)
    e["model"] = e["model"].map(paper_models)
    g = e.groupby(["model", "setting", "protocol", "benchmark"], sort=False).agg(
        acc=("acc", "mean"), task=("task", "first"), metric=("metric", "first"), split=("split", "first"),
        n=("n", "first")).reset_index()
    g["accuracy"] = g["acc"] * 100
    out = g.rename(columns={"setting": "method"})[LONG]
    avg = out.groupby(["model", "method", "protocol"], sort=False)["accuracy"].agg(["mean", "count"]).reset_index()
    avg = avg[avg["count"] == len(BENCHMARKS)]  # an average only over all eight
    avg = avg.assign(benchmark="avg", accuracy=avg["mean"])[["model", "method", "protocol", "benchmark", "accuracy"]]
    return pd.concat([out, avg], ignore_index=True)[LONG]


def protocols(long: pd.DataFrame) -> list[str]:
    """The protocols of our rows, :data:`PRIMARY` first."""
    ps = list(dict.fromkeys(long["protocol"].dropna())) if not long.empty else []
    return sorted(ps, key=lambda p: (p != PRIMARY, ps.index(p)))


# ------------------------------------------------------------------ layout
def _order(models, methods):
    mo = [m for m in PAPER_MODEL_ORDER if m in models] + sorted(m for m in models if m not in PAPER_MODEL_ORDER)
    me = [m for m in METHODS if m in methods] + sorted(m for m in methods if m not in METHODS)
    return mo, me


def wide(long: pd.DataFrame) -> pd.DataFrame:
    """Paper layout: one row per model x method, columns BENCHMARKS + avg (NaN where missing)."""
    cols = BENCHMARKS + ["avg"]
    if long.empty:
        return pd.DataFrame(columns=["model", "method", *cols])
    t = long.pivot_table(index=["model", "method"], columns="benchmark", values="accuracy", aggfunc="first")
    t = t.reindex(columns=cols)
    mo, me = _order(set(long["model"]), set(long["method"]))
    idx = [(m, s) for m in mo for s in me if (m, s) in t.index]
    return t.reindex(idx).reset_index()


def _num(v, fmt="{:.2f}") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def table_markdown(w: pd.DataFrame, title: str = "") -> str:
    """The paper's table: model, method, eight benchmarks, average; two decimals."""
    cols = BENCHMARKS + ["avg"]
    head = ["Model", "Method"] + [HEADERS[c] for c in cols]
    lines = ([title, ""] if title else []) + ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for _, r in w.iterrows():
        lines.append("| " + " | ".join([r["model"], r["method"], *(_num(r[c]) for c in cols)]) + " |")
    return "\n".join(lines) + "\n"


def comparison(ours: pd.DataFrame, paper: pd.DataFrame, check: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every (model, method, benchmark) of either side, per protocol of ours: ours, paper,
    diff = ours - paper, (with the split ``check``) whether the split check passed, and our 95%
    interval ``lo`` / ``hi`` on our item count ``n`` with ``reproduced``: the paper's value inside
    it (:func:`grades.report.claims.paper_cells`)."""
    p = paper.rename(columns={"accuracy": "paper"})[["model", "method", "benchmark", "paper"]]
    parts = []
    for protocol in protocols(ours) or [""]:
        o = ours[ours["protocol"] == protocol].rename(columns={"accuracy": "ours"})
        o = o[["model", "method", "benchmark", "ours", "task", "metric", "n"]]
        m = o.merge(p, on=["model", "method", "benchmark"], how="outer")
        m.insert(0, "protocol", protocol)
        m["diff"] = m["ours"] - m["paper"]
        m["split_check"] = m["benchmark"].map(_verdicts(check, protocol)).fillna("")
        parts.append(_sorted(paper_cells(m)))
    return pd.concat(parts, ignore_index=True)


def _verdicts(check: pd.DataFrame | None, protocol: str) -> dict[str, str]:
    if check is None or check.empty:
        return {}
    c = check[check["protocol"] == protocol]
    return dict(zip(c["benchmark"], c["verdict"]))


def _sorted(m: pd.DataFrame) -> pd.DataFrame:
    mo, me = _order(set(m["model"]), set(m["method"]))
    key = {b: i for i, b in enumerate(BENCHMARKS + ["avg"])}
    m["_o"] = m["model"].map({x: i for i, x in enumerate(mo)}) * 1000 + m["method"].map(
        {x: i for i, x in enumerate(me)}) * 20 + m["benchmark"].map(lambda b: key.get(b, 19))
    return m.sort_values("_o").drop(columns="_o").reset_index(drop=True)


def _ours_paper(o: float, p: float, d: float, verdict: str = "") -> str:
    """A comparison cell: "ours / paper (ours − paper)", the difference left out when undefined,
    then the verdict on the paper's value (:func:`_verdict`) where there is one."""
    return f"{_num(o)} / {_num(p)}" + ("" if math.isnan(d) else f" ({_signed(d)})") + (f" {verdict}" if verdict else "")


def _verdict(r: pd.Series) -> str:
    """"✓ [89.20, 92.70]": the paper's value inside our 95% interval (✗: outside); "" without a verdict."""
    rep = r.get("reproduced")
    if rep is None or (isinstance(rep, float) and math.isnan(rep)):
        return ""
    return ("✓" if bool(rep) else "✗") + f" [{r['lo']:.2f}, {r['hi']:.2f}]"


def _cells(g: pd.DataFrame, cols: list[str], paper_alone: bool = False) -> list[str]:
    """One cell per benchmark of a model x method group: "–" where the group lacks it, else
    "ours / paper (Δ)" (:func:`_ours_paper`), or with ``paper_alone`` the paper's score alone
    where we have none."""
    out = []
    for c in cols:
        r = g[g["benchmark"] == c]
        if r.empty:
            out.append("–")
            continue
        o, p, d = r["ours"].iloc[0], r["paper"].iloc[0], r["diff"].iloc[0]
        out.append(_num(p) if paper_alone and math.isnan(o) else _ours_paper(o, p, d, _verdict(r.iloc[0])))
    return out


def comparison_markdown(cmp: pd.DataFrame, check: pd.DataFrame | None = None) -> str:
    """One block per protocol of ours: rows model x method; each cell "ours / paper (Δ)"; only
    rows where we have a number; a benchmark that fails the split check is flagged (⚠) in the
    head, with the reason below the block."""
    lines = ["Accuracy (%): ours / paper (ours − paper), per protocol of ours (its metric in the title), then ✓ "
             "when the paper's value lies inside our 95% interval [shown] for our accuracy on that benchmark's item "
             "count (Wilson), ✗ when it does not (reproduced or not); averages get no verdict. The "
             "paper's numbers: results/paper/accuracy_language.csv (one run each, no error bars); its averages "
             "as printed. – = missing (not run, failed, or not evaluated: accuracy.md lists the runs). ⚠ = the "
             "split check failed: the paper's values do not fit the number of items we scored "
             "(paper_splits.md).", ""]
    cols = BENCHMARKS + ["avg"]
    any_compared = False
    for protocol, part in cmp.groupby("protocol", sort=False):
        flags = flagged(check, protocol) if check is not None and protocol else {}
        metric = ", ".join(dict.fromkeys(part["metric"].dropna())) or "–"
        if protocol:
            lines += [f"**Protocol: {protocol}** (metric: {metric})", ""]
        head = ["Model", "Method"] + [HEADERS[c] + (" ⚠" if c in flags else "") for c in cols]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        have = part[part["ours"].notna()]
        for (model, method), g in part.groupby(["model", "method"], sort=False):
            if not ((have["model"] == model) & (have["method"] == method)).any():
                continue
            lines.append("| " + " | ".join([model, method, *_cells(g, cols)]) + " |")
        n = have["diff"].notna() & have["benchmark"].ne("avg")
        if n.any():
            any_compared = True
            d = have.loc[n, "diff"]
            lines += ["", f"{int(n.sum())} benchmark cells compared: mean difference {_signed(d.mean())}, "
                          f"mean |difference| {d.abs().mean():.2f}, largest |difference| {d.abs().max():.2f} points."]
            lines += [""] + [f"* {s}" for s in reproduced_summary(have)]
        lines += [f"⚠ {HEADERS[b]}: {why}." for b, why in flags.items()] + [""]
    if not any_compared:
        lines += ["_no run of ours matches a cell of the paper's table yet_"]
    return "\n".join(lines).rstrip("\n") + "\n"


def efficiency_comparison(eff_ours: pd.DataFrame, paper_eff: pd.DataFrame, paper_models: dict[str, str],
                          ours_acc: pd.DataFrame, baseline: str = "FP") -> pd.DataFrame:
    """Train time, speedup vs FP, FLOPs ratio and average accuracy: ours beside the paper's."""
    rows = []
    o = eff_ours.copy() if not eff_ours.empty else pd.DataFrame(columns=["model", "setting"])
    if not o.empty:
        o = o[o["model"].isin(paper_models)].copy()
        o["model"] = o["model"].map(paper_models)
    first = protocols(ours_acc)[:1]  # the primary protocol's average
    avg = ours_acc[(ours_acc["benchmark"] == "avg") & ours_acc["protocol"].isin(first)].set_index(
        ["model", "method"])["accuracy"] if not ours_acc.empty else pd.Series(dtype=float)
    keys = [(r.model, r.method) for r in paper_eff.itertuples()]
    keys += [(r.model, r.setting) for r in o.itertuples() if (r.model, r.setting) not in keys]
    for model, method in keys:
        p = paper_eff[(paper_eff["model"] == model) & (paper_eff["method"] == method)]
        q = o[(o["model"] == model) & (o["setting"] == method)] if not o.empty else o
        tag = f"speedup_vs_{baseline}"
        ours_speed = q[tag].iloc[0] if len(q) else math.nan
        paper_speed = float(p["speedup_vs_fp"].iloc[0]) if len(p) else math.nan
        lo, hi, verdict = ((float(q[f"{tag}_lo"].iloc[0]), float(q[f"{tag}_hi"].iloc[0]),
                            str(q[f"{tag}_verdict"].iloc[0] or "")) if len(q) and f"{tag}_lo" in q
                           else (math.nan, math.nan, ""))
        rows.append({
            "model": model, "method": method,
            "train_time_s_ours": q["total_time_s"].iloc[0] if len(q) else math.nan,
            "train_time_s_paper": float(p["train_time_s"].iloc[0]) if len(p) else math.nan,
            "speedup_ours": ours_speed, "speedup_ours_lo": lo, "speedup_ours_hi": hi, "speedup_ours_verdict": verdict,
            "speedup_paper": paper_speed, "speedup_diff": ours_speed - paper_speed,
            "speedup_paper_inside": reproduced(paper_speed, lo, hi),
            "flops_ratio_ours": q[f"flops_ratio_vs_{baseline}"].iloc[0] if len(q) else math.nan,
            "flops_as_printed_paper": float(p["flops_ratio_as_printed"].iloc[0]) if len(p) else math.nan,
            "avg_accuracy_ours": float(avg.get((model, method), math.nan)),
            "avg_accuracy_paper": float(p["avg_accuracy"].iloc[0]) if len(p) else math.nan,
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    mo, me = _order(set(df["model"]), set(df["method"]))
    df["_o"] = df["model"].map({x: i for i, x in enumerate(mo)}) * 100 + df["method"].map(
        {x: i for i, x in enumerate(me)})
    return df.sort_values("_o").drop(columns="_o").reset_index(drop=True)


def _signed(d: float) -> str:
    return "–" if d is None or math.isnan(d) else f"{round(d, 2) + 0.0:+.2f}"  # no "-0.00"


def _speedup_ours(r) -> str:
    """"1.05x [0.98, 1.12] indistinguishable from 1 ✓" (✓ / ✗: the paper's speedup inside / outside the interval)."""
    cell = speed_cell(r["speedup_ours"], r.get("speedup_ours_lo", math.nan), r.get("speedup_ours_hi", math.nan))
    verdict, inside = r.get("speedup_ours_verdict"), r.get("speedup_paper_inside")
    if cell != "–" and isinstance(verdict, str) and verdict:
        cell += f" {verdict}"
    return cell + ("" if inside is None or cell == "–" else " ✓" if inside else " ✗")


def efficiency_markdown(e: pd.DataFrame) -> str:
    lines = ["Training time (s; ours: training + validation), speedup over FP of the same model, FLOPs and "
             "average accuracy (%): ours beside the paper's (results/paper/efficiency.csv). The paper's FLOPs "
             "cells are ambiguous ('0.55x reduction', '2.34x'): shown as printed, not as ratios. Our FLOPs "
             "column is the ratio to FP (analytic matmul FLOPs of training and validation). Our average accuracy "
             f"is over the eight benchmarks under our first protocol ({PRIMARY} when scored). Our speedup carries "
             "its 95% interval and verdict (docs: Reading the results); ✓ / ✗: the paper's speedup inside / outside "
             "it.", ""]
    head = ["Model", "Method", "time ours", "time paper", "speedup ours", "speedup paper", "Δ speedup",
            "FLOPs/FP ours", "FLOPs paper (as printed)", "avg ours", "avg paper"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for _, r in e.iterrows():
        lines.append("| " + " | ".join([
            r["model"], r["method"], _num(r["train_time_s_ours"], "{:.0f}"), _num(r["train_time_s_paper"], "{:.0f}"),
            _speedup_ours(r), _num(r["speedup_paper"], "{:.2f}x"),
            _signed(r["speedup_diff"]), _num(r["flops_ratio_ours"], "{:.2f}"),
            _num(r["flops_as_printed_paper"], "{:.2f}"), _num(r["avg_accuracy_ours"]),
            _num(r["avg_accuracy_paper"])]) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ multimodal
MM_BENCHMARKS = {  # the paper's multimodal benchmarks, per paper model, in its column order
    "Qwen2.5-VL-7B": ["gqa", "vqav2", "coco_caption"],
    "nanoVLM": ["mmstar_coarse_perception", "mmstar_fine_grained_perception", "mmstar_instance_reasoning",
                "mmstar_logical_reasoning", "mmstar_math", "mmstar_science_technology"],
}


def multimodal_comparison(evals: pd.DataFrame, paper_dir: str | Path, paper_models: dict[str, str]) -> pd.DataFrame:
    """The paper's multimodal scores with ours beside: model, method, benchmark, paper, ours, diff.

    Ours: eval rows of models mapped in ``paper_models`` whose task is one of the paper's
    multimodal benchmarks (the task's own metric x 100: exact match for GQA, VQA accuracy, CIDEr for
    COCO, accuracy for MMStar; grades.report.runs), the mean over seeds; NaN where not run."""
    p = pd.read_csv(Path(paper_dir) / "multimodal.csv")
    out = p.rename(columns={"score": "paper"})[["model", "method", "benchmark", "paper"]].copy()
    out["ours"] = float("nan")
    if not evals.empty:
        e = evals[evals["model"].isin(paper_models) & evals["setting"].ne("Base")].copy()
        e["model"] = e["model"].map(paper_models)
        g = e.groupby(["model", "setting", "task"], sort=False)["acc"].mean() * 100
        out["ours"] = [g.get((r.model, r.method, r.benchmark), float("nan")) for r in out.itertuples()]
    out["diff"] = out["ours"] - out["paper"]
    return out


def multimodal_markdown(mm: pd.DataFrame) -> str:
    """One block per paper model: rows = methods, cells = "paper" or "ours / paper (Δ)"."""
    lines = ["Vision-language models: the paper's scores (results/paper/multimodal.csv) with ours beside "
             "where we have runs (\"ours / paper (ours − paper)\"; – = not run).", ""]
    for model, g in mm.groupby("model", sort=False):
        benches = [b for b in MM_BENCHMARKS.get(model, []) if b in set(g["benchmark"])] + sorted(
            set(g["benchmark"]) - set(MM_BENCHMARKS.get(model, [])))
        lines += [f"**{model}**", "", "| Method | " + " | ".join(benches) + " |",
                  "|---|" + "|".join(["---:"] * len(benches)) + "|"]
        for method, gm in g.groupby("method", sort=False):
            lines.append(f"| {method} | " + " | ".join(_cells(gm, benches, paper_alone=True)) + " |")
        lines.append("")
    if mm["ours"].isna().all():
        lines.append("_None of ours yet: the VLM runs of config/paper.yaml (qwen2.5-vl-7b, nanovlm) have not "
                     "finished (README \"Vision-language models\")._")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ write
def _title(ours: pd.DataFrame, protocol: str) -> str:
    part = ours[(ours["protocol"] == protocol) & ours["benchmark"].ne("avg")]
    metric = ", ".join(dict.fromkeys(part["metric"].dropna())) or "acc"
    tasks = ", ".join(dict.fromkeys(part["task"].dropna()))
    return (f"Accuracy (%) of our runs in the paper's layout, protocol {protocol} (metric {metric}; tasks {tasks}; "
            f"zero-shot; Avg = mean of the eight).")


def planned_frame(tasks: list[str] | None) -> pd.DataFrame | None:
    """task, benchmark, protocol, split, split_size of the tasks a profile will score (for the split check)."""
    if not tasks:
        return None
    from ..evaluate.catalogue import describe

    return pd.DataFrame(describe(tasks, count=False))


def write_paper_tables(train: pd.DataFrame, evals: pd.DataFrame, eff: pd.DataFrame, out_dir: str | Path,
                       paper_dir: str | Path, paper_models: dict[str, str], baseline: str = "FP",
                       planned_tasks: list[str] | None = None) -> dict[str, Path]:
    """The paper-comparison tables from collected run frames (grades.report.runs.collect);
    ``planned_tasks``: the tasks the profile scores, for the split check before any run."""
    out = Path(out_dir)
    paper_acc, paper_eff = load_paper(paper_dir)
    ours = ours_long(evals, paper_models)
    check = split_check(paper_acc, ours, planned_frame(planned_tasks))
    ow = pd.concat([wide(ours[ours["protocol"] == p]).assign(protocol=p) for p in protocols(ours)] or
                   [wide(ours).assign(protocol=None)], ignore_index=True)
    cmp = comparison(ours, paper_acc, check)
    effc = efficiency_comparison(eff, paper_eff, paper_models, ours, baseline)
    mm = multimodal_comparison(evals, paper_dir, paper_models)
    fmt = "%.6g"
    ours_md = "\n".join(table_markdown(wide(ours[ours["protocol"] == p]), _title(ours, p)) for p in protocols(ours)) \
        or table_markdown(wide(ours), "Accuracy (%) of our runs in the paper's layout (none yet).")
    return {
        "paper_accuracy": atomic_write_text(out / "paper_accuracy.csv", ow.to_csv(index=False, float_format=fmt)),
        "paper_accuracy_md": atomic_write_text(out / "paper_accuracy.md", ours_md),
        "paper_splits": atomic_write_text(out / "paper_splits.csv", check.to_csv(index=False)),
        "paper_splits_md": atomic_write_text(out / "paper_splits.md", splits_markdown(check, HEADERS)),
        "paper_reference_md": atomic_write_text(out / "paper_reference.md", table_markdown(
            wide(paper_acc), "The paper's table (results/paper/accuracy_language.csv; Avg as printed).")),
        "paper_comparison": atomic_write_text(out / "paper_comparison.csv", cmp.to_csv(index=False, float_format=fmt)),
        "paper_comparison_md": atomic_write_text(out / "paper_comparison.md", comparison_markdown(cmp, check)),
        "paper_efficiency": atomic_write_text(out / "paper_efficiency.csv", effc.to_csv(index=False, float_format=fmt)),
        "paper_efficiency_md": atomic_write_text(out / "paper_efficiency.md", efficiency_markdown(effc)),
        "paper_multimodal": atomic_write_text(out / "paper_multimodal.csv", mm.to_csv(index=False, float_format=fmt)),
        "paper_multimodal_md": atomic_write_text(out / "paper_multimodal.md", multimodal_markdown(mm)),
    }
