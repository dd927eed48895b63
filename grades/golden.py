"""Golden values of a profile's runs: the regression check of the smoke profile.

A golden file holds, per run of ``results/runs/<profile>/``, the numbers that must not
drift — losses at fixed steps, the step at which each matrix froze, FLOPs, tokens,
accuracy — and the tolerances they are compared with::

    python -m grades.golden update results/runs/smoke tests/golden/smoke.json   # regenerate
    python -m grades.golden check  results/runs/smoke tests/golden/smoke.json   # compare

Regenerate only after a deliberate change of the numbers (model, data, training,
method), and say why in the commit. The tolerances allow what another machine with the
same torch version may change (thread count, BLAS kernels): float sums in another order
move losses and signals slightly, and a signal that ends up just on the other side of
tau moves a freeze by a check or two. Counts that do not depend on float arithmetic
(steps, tokens, FLOPs of a run that freezes nothing) must match exactly or nearly so.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .io import atomic_write_json
from .rundir import TRAIN, RunDir, base_dirs, run_dirs

LOSS_STEPS = (1, 25, 50, 100, 150, 200)

# Defaults written into a new golden file (the file's own values are the ones used).
TOLERANCES = {
    "loss_rel": 0.02,  # loss at each fixed step and the mean of the last 20 steps
    "acc_abs": 0.03,  # accuracy, absolute (3 points)
    "flops_rel": 0.001,  # training FLOPs of a run that freezes nothing: the same computation
    "flops_rel_freezing": 0.01,  # ... of a run that freezes: freezes may move by a few steps
    "freeze_step_abs": 5,  # each matrix frozen in both: its freeze step within this many steps
    "first_freeze_step_abs": 2,  # the run's first freeze
    "frozen_count_abs": 2,  # matrices frozen by the end
}


def _accuracy(run_dir: str | Path) -> dict[str, float] | None:
    e = RunDir(run_dir).eval()
    if e is None:
        return None
    # acc of multiple-choice tasks; exact_match of generation tasks (shapes_gen through lm-eval)
    return {t: v["acc"] if v.get("acc") is not None else v["exact_match"]
            for t, v in sorted(e.get("tasks", {}).items())
            if v.get("acc") is not None or v.get("exact_match") is not None}


def extract(runs_dir: str | Path) -> dict[str, dict]:
    """The golden values of every run with a train.json under ``results/runs/<profile>`` (any status)."""
    runs_dir = Path(runs_dir)
    out: dict[str, dict] = {}
    for rd in run_dirs(runs_dir):
        if not (rd / TRAIN).exists():
            continue
        t = rd.train()
        if t is None:
            raise ValueError(f"{rd / TRAIN} is unreadable")
        curve = {int(s): float(v) for s, v in t["loss_curve"]}
        last = [v for _, v in sorted(curve.items())][-20:]
        freezes = rd.freeze_steps()
        out[rd.key(runs_dir)] = {
            "status": t["status"],
            "steps_run": t["steps_run"],
            "tokens": t["tokens"],
            "loss_at": {str(s): curve[s] for s in LOSS_STEPS if s in curve},
            "loss_last20_mean": sum(last) / len(last) if last else None,
            "flops_total": t["flops"]["total"],
            "frozen": len(freezes),
            "first_freeze_step": min(freezes.values()) if freezes else None,
            "freeze_steps": freezes,
            "accuracy": _accuracy(rd.path),
        }
    for base in base_dirs(runs_dir):
        out[base.key(runs_dir)] = {"accuracy": _accuracy(base.path)}
    if not out:
        raise FileNotFoundError(f"no runs under {runs_dir} (expected <model>/<setting>/seed<k>/train.json)")
    return out


#: the packages whose releases move the numbers (kernels, initialisation, tokenisation)
VERSIONED = ("torch", "transformers", "peft", "tokenizers", "numpy", "lm_eval")


def versions() -> dict[str, str]:
    """The installed versions of :data:`VERSIONED` (a missing package: ``"absent"``)."""
    from importlib import metadata

    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def version_note(golden: dict) -> str | None:
    """One line naming the packages whose installed version differs from the golden file's
    (the first suspect when numbers drift and the code did not change), or None."""
    recorded = golden.get("versions") or ({"torch": golden["torch"]} if "torch" in golden else {})
    have = versions()
    diff = [f"{k} {v} (golden made with {recorded[k]})" for k, v in have.items()
            if k in recorded and recorded[k] != v]
    if not diff:
        return None
    return ("installed versions differ from the golden file's: " + ", ".join(diff)
            + "; install the tested set (pip install -c constraints.txt ...) before suspecting the code")


def make(runs_dir: str | Path) -> dict:
    runs_dir = Path(runs_dir)
    return {
        "about": "Golden values of the smoke profile (tests/test_smoke_workflow.py compares a fresh run). "
                 "Regenerate after a deliberate change: python -m grades.golden update results/runs/smoke "
                 "tests/golden/smoke.json",
        "profile": runs_dir.name,
        "versions": versions(),
        "tolerances": dict(TOLERANCES),
        "runs": extract(runs_dir),
    }


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12) - 1e-12


def compare(golden: dict, actual: dict[str, dict]) -> list[str]:
    """Differences beyond the golden file's tolerances, one line each (empty: all good)."""
    tol = {**TOLERANCES, **golden.get("tolerances", {})}
    problems: list[str] = []
    for key, g in golden["runs"].items():
        a = actual.get(key)
        if a is None:
            problems.append(f"{key}: missing")
            continue

        def bad(what: str, got, want, allowed: str, key: str = key) -> None:
            problems.append(f"{key}: {what} = {got}, golden {want} (allowed {allowed})")

        for k in ("status", "steps_run", "tokens"):
            if k in g and a.get(k) != g[k]:
                bad(k, a.get(k), g[k], "exact")
        for s, want in g.get("loss_at", {}).items():
            got = a.get("loss_at", {}).get(s)
            if got is None or not math.isfinite(got) or _rel(got, want) > tol["loss_rel"]:
                bad(f"loss at step {s}", got, want, f"±{tol['loss_rel']:.0%}")
        if g.get("loss_last20_mean") is not None:
            got = a.get("loss_last20_mean")
            if got is None or _rel(got, g["loss_last20_mean"]) > tol["loss_rel"]:
                bad("mean loss of the last 20 steps", got, g["loss_last20_mean"], f"±{tol['loss_rel']:.0%}")
        if "flops_total" in g:
            r = tol["flops_rel_freezing"] if (g["frozen"] or a.get("frozen")) else tol["flops_rel"]
            if _rel(a["flops_total"], g["flops_total"]) > r:
                bad("training FLOPs", f"{a['flops_total']:.6g}", f"{g['flops_total']:.6g}", f"±{r:.1%}")
        if "frozen" in g:
            if abs(a["frozen"] - g["frozen"]) > tol["frozen_count_abs"]:
                bad("matrices frozen", a["frozen"], g["frozen"], f"±{tol['frozen_count_abs']}")
            if (a["first_freeze_step"] is None) != (g["first_freeze_step"] is None) or (
                    g["first_freeze_step"] is not None
                    and abs(a["first_freeze_step"] - g["first_freeze_step"]) > tol["first_freeze_step_abs"]):
                bad("first freeze step", a["first_freeze_step"], g["first_freeze_step"],
                    f"±{tol['first_freeze_step_abs']} steps")
            for comp, step in g["freeze_steps"].items():
                got = a["freeze_steps"].get(comp)
                if got is not None and abs(got - step) > tol["freeze_step_abs"]:
                    bad(f"freeze step of {comp}", got, step, f"±{tol['freeze_step_abs']} steps")
        for task, want in (g.get("accuracy") or {}).items():
            got = (a.get("accuracy") or {}).get(task)
            if got is None or abs(got - want) > tol["acc_abs"] + 1e-9:
                bad(f"{task} accuracy", got, want, f"±{tol['acc_abs']}")
    for key in actual:
        if key not in golden["runs"]:
            problems.append(f"{key}: not in the golden file (regenerate it if the run was added on purpose)")
    note = version_note(golden) if problems else None
    return [note, *problems] if note else problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.golden", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (("update", "write the golden file from finished runs"),
                       ("check", "compare finished runs with the golden file")):
        p = sub.add_parser(name, help=text)
        p.add_argument("runs_dir", help="results/runs/<profile>")
        p.add_argument("golden", help="golden JSON file, e.g. tests/golden/smoke.json")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "update":
            doc = make(args.runs_dir)
            old = Path(args.golden)
            if old.exists():  # keep tolerances tuned by hand
                doc["tolerances"] = {**doc["tolerances"], **json.loads(old.read_text()).get("tolerances", {})}
            atomic_write_json(args.golden, doc)
            print(f"wrote {args.golden}: {len(doc['runs'])} runs")
            return 0
        problems = compare(json.loads(Path(args.golden).read_text()), extract(args.runs_dir))
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    print("golden values: OK" if not problems else f"golden values: {len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
