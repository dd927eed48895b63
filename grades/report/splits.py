"""The split check: could the paper's values come from the items we scored?

An accuracy over n items is k/n. The paper prints percentages with two decimals, so a
printed value v fits n when some integer k has |100 k / n - v| <= 0.005. For each
benchmark (and protocol) this compares the number of items we scored with the item
counts of the benchmark's splits (:data:`grades.data.benchmarks.SPLITS`): how many of
the paper's values fit each of them. With n items a random two-decimal value fits with
probability about n / 10,000, so 30 of 30 values fitting 299 items says a lot, while at
10,000 items or more every value fits and the check cannot tell.

Verdicts: ``ok`` (at least 90% of the paper's values fit our n; one misprint is not a
mismatch), ``mismatch`` (fewer: the paper's numbers come from other items than ours), ``not
scored`` (no evaluation of ours yet), ``uninformative`` (our n >= 10,000). Before any run, the
planned tasks (their split's known size, :func:`grades.evaluate.catalogue.describe`) are
checked the same way: ``ok (planned)``, ``mismatch (planned)``, ...
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from ..data.benchmarks import SPLITS

#: the share of the paper's values that must fit our n
FIT_SHARE = 0.9
#: from this many items on, every two-decimal percentage is k/n for some k
EVERY_VALUE_FITS = 10_000


def fits(value: float, n: int) -> bool:
    """Whether a percentage printed with two decimals can be k/n for an integer k."""
    if not n or value is None or math.isnan(value):
        return False
    k = round(value * n / 100)
    return any(abs(100 * kk / n - value) <= 0.005 + 1e-9 for kk in (k - 1, k, k + 1) if 0 <= kk <= n)


def count_fits(values: Iterable[float], n: int) -> int:
    return sum(fits(v, n) for v in values)


def verdict(values: list[float], n: int | None) -> str:
    """The verdict for the paper's ``values`` and our n (module docstring)."""
    if not n:
        return "not scored"
    if n >= EVERY_VALUE_FITS:
        return "uninformative"
    return "ok" if count_fits(values, n) >= FIT_SHARE * len(values) else "mismatch"


def split_check(paper_acc: pd.DataFrame, ours: pd.DataFrame, planned: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per benchmark and protocol of ours (one per benchmark with protocol "" when we
    have none): task, split, n_ours, the paper's values that fit n_ours, and those that fit each
    known split (``fits``: "validation 299: 30/30; test 1172: 3/30"), the best-fitting split
    and the verdict.

    ``paper_acc``: results/paper/accuracy_language.csv; ``ours``: :func:`grades.report.paper.ours_long`
    (columns benchmark, protocol, task, split, n); ``planned``: the tasks the profile will score
    (columns task, benchmark, protocol, split, split_size), checked where nothing is scored yet."""
    rows = []
    for bench, sizes in SPLITS.items():
        values = paper_acc.loc[paper_acc["benchmark"] == bench, "accuracy"].dropna().tolist()
        total = len(values)
        per_split = {f"{s} {n}": count_fits(values, n) for s, n in sizes.items()}
        best = max(per_split, key=per_split.get) if per_split else ""
        mine = ours[ours["benchmark"] == bench] if not ours.empty else ours
        plan = planned[planned["benchmark"] == bench] if planned is not None and len(planned) else None
        groups = list(mine.groupby("protocol", sort=False)) if len(mine) else []
        scored = {p for p, _ in groups}
        if plan is not None:
            groups += [(p, g) for p, g in plan.groupby("protocol", sort=False) if p not in scored]
        for protocol, g in groups or [("", mine)]:
            if protocol in scored or not len(g):
                ns = sorted({int(n) for n in g["n"].dropna()}) if len(g) else []
                n = ns[0] if len(ns) == 1 else None
                verdict_ = verdict(values, n) if n or not ns else "mismatch"  # runs scored different numbers
                fit = count_fits(values, n) if n else None
            else:  # planned, not scored yet: the known size of the split the task scores
                ns = sorted({int(n) for n in g["split_size"].dropna()})
                n = ns[0] if len(ns) == 1 else None
                fit = count_fits(values, n) if n else None
                verdict_ = f"{verdict(values, n)} (planned)" if n else "not scored"
            rows.append({
                "benchmark": bench, "protocol": protocol, "task": ",".join(dict.fromkeys(g["task"])) if len(g) else "",
                "split": ",".join(dict.fromkeys(str(s) for s in g["split"].dropna())) if len(g) else "",
                "n_ours": n if n else (",".join(map(str, ns)) or None), "paper_values": total,
                "fit_ours": fit, "fits": "; ".join(f"{k}: {v}/{total}" for k, v in per_split.items()),
                "best_split": best, "verdict": verdict_,
            })
    return pd.DataFrame(rows, columns=["benchmark", "protocol", "task", "split", "n_ours", "paper_values", "fit_ours",
                                       "fits", "best_split", "verdict"])


def flagged(check: pd.DataFrame, protocol: str) -> dict[str, str]:
    """{benchmark: why} of the mismatches of one protocol (for the comparison table)."""
    out = {}
    for r in check[(check["protocol"] == protocol) & (check["verdict"] == "mismatch")].itertuples():
        out[r.benchmark] = (f"we scored {r.n_ours} items ({r.task}, {r.split or '?'} split): "
                            f"{r.fit_ours if r.fit_ours is not None else '?'} of the paper's {r.paper_values} values "
                            f"fit that; {r.fits}")
    return out


def splits_markdown(check: pd.DataFrame, headers: dict[str, str]) -> str:
    """The split check as a table, with its reading."""
    lines = ["Split check: can the paper's values be k/n for the n items we scored? Each paper value (two "
             "decimals) is tested against our n and the item counts of the benchmark's splits (x/30 = paper "
             "values that fit). **mismatch** = our numbers are not over the items the paper's come from; "
             "uninformative = n >= 10,000 (every value fits); not scored = no evaluation of ours yet; (planned) = "
             "not scored yet, checked with the size of the split the profile's task will score.", "",
             "| Benchmark | protocol | task | split | n ours (scored, or planned) | paper values fitting n ours | "
             "paper values fitting each "
             "split | verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in check.itertuples():
        fit = "–" if r.fit_ours is None or (isinstance(r.fit_ours, float) and math.isnan(r.fit_ours)) \
            else f"{int(r.fit_ours)}/{r.paper_values}"
        verdict = f"**{r.verdict}**" if r.verdict.startswith("mismatch") else r.verdict
        lines.append(f"| {headers.get(r.benchmark, r.benchmark)} | {r.protocol or '–'} | {r.task or '–'} | "
                     f"{r.split or '–'} | {r.n_ours if r.n_ours is not None else '–'} | {fit} | {r.fits} | {verdict} |")
    return "\n".join(lines) + "\n"
