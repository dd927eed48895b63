"""Same seed, same numbers: repeat runs on CPU, and the golden-value checker.

The golden comparison of a fresh smoke workflow run is in test_smoke_workflow.py
(slow); here the checker itself is tested, and the committed golden file against the
smoke runs in results/runs/smoke when they exist.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grades import golden
from grades.train import load_run_config, run

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "smoke.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_world):
    d = tmp_path_factory.mktemp("determinism")
    model, data = tiny_world
    raw = {"name": "det", "model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"},
           "steps": 30, "batch_size": 4, "seq_len": 96, "threads": 1, "optim": {"lr": 3.0e-3},
           "method": {"name": "grades", "alpha": 0.25, "tau": 0.35}, "save_model": False}
    return d, raw


def _files(run_dir: Path) -> dict:
    t = json.loads((run_dir / "train.json").read_text())
    return {"losses": t["loss_curve"], "tokens": t["tokens"], "flops": t["flops"],
            "events": (run_dir / "freeze_events.csv").read_text(), "signals": (run_dir / "signals.csv").read_text()}


@pytest.mark.slow
def test_same_seed_same_run_in_and_across_processes(tiny):
    d, raw = tiny
    run(load_run_config(raw), d / "a", progress=False)
    run(load_run_config(raw), d / "b", progress=False)  # same process, after another run
    (d / "run.yaml").write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, "-m", "grades.train", "--config", str(d / "run.yaml"), "--out", str(d / "c"),
                        "--no-progress"], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    a, b, c = _files(d / "a"), _files(d / "b"), _files(d / "c")
    assert a == b == c  # bit-identical losses, FLOPs, freeze events and signals
    assert len(list(csv.DictReader(a["events"].splitlines()))) > 0, "the run should freeze something"

    other = run(load_run_config({**raw, "seed": 1}), d / "seed1", progress=False)
    assert other["loss_curve"] != a["losses"], "another seed should give another batch order"


# ------------------------------------------------------------- golden values
def _fake_runs(root: Path) -> Path:
    runs = root / "runs" / "smoke"
    for setting, events in (("fp", []), ("fp-grades", [(60, "q"), (73, "k"), (90, "v")])):
        d = runs / "m" / setting / "seed0"
        d.mkdir(parents=True)
        curve = [[s, 3.0 - s / 100] for s in range(1, 201)]
        (d / "train.json").write_text(json.dumps({"status": "ok", "steps_run": 200, "tokens": 1000,
                                                  "loss_curve": curve, "flops": {"total": 1e12}}))
        (d / "freeze_events.csv").write_text("step,component\n" + "".join(f"{s},{c}\n" for s, c in events))
        (d / "eval.json").write_text(json.dumps({"tasks": {"world_mc": {"acc": 0.6}}}))
    (runs / "m" / "base").mkdir()
    (runs / "m" / "base" / "eval.json").write_text(json.dumps({"tasks": {"world_mc": {"acc": 0.4}}}))
    return runs


def test_golden_update_check_and_tolerances(tmp_path, capsys):
    runs = _fake_runs(tmp_path)
    gold = tmp_path / "golden.json"
    assert golden.main(["update", str(runs), str(gold)]) == 0
    doc = json.loads(gold.read_text())
    assert set(doc["runs"]) == {"m/fp/seed0", "m/fp-grades/seed0", "m/base"}
    g = doc["runs"]["m/fp-grades/seed0"]
    assert g["first_freeze_step"] == 60 and g["frozen"] == 3 and g["freeze_steps"]["v"] == 90
    assert set(g["loss_at"]) == {"1", "25", "50", "100", "150", "200"}
    assert golden.main(["check", str(runs), str(gold)]) == 0

    actual = golden.extract(runs)
    ok = copy.deepcopy(actual)  # within tolerance
    ok["m/fp-grades/seed0"]["loss_at"]["100"] *= 1.01
    ok["m/fp-grades/seed0"]["freeze_steps"]["v"] += 5
    ok["m/fp-grades/seed0"]["flops_total"] *= 1.005
    ok["m/fp/seed0"]["accuracy"]["world_mc"] += 0.03
    assert golden.compare(doc, ok) == []

    bad = copy.deepcopy(actual)
    bad["m/fp-grades/seed0"]["loss_at"]["100"] *= 1.03
    bad["m/fp-grades/seed0"]["first_freeze_step"] = 63
    bad["m/fp/seed0"]["flops_total"] *= 1.002  # a run that freezes nothing: 0.1%
    bad["m/fp/seed0"]["tokens"] += 1
    bad["m/base"]["accuracy"]["world_mc"] = 0.45
    del bad["m/fp-grades/seed0"]["freeze_steps"]["q"]
    bad["m/fp-grades/seed0"]["freeze_steps"]["k"] = 80
    problems = golden.compare(doc, bad)
    text = "\n".join(problems)
    for what in ("loss at step 100", "first freeze step", "training FLOPs", "tokens", "world_mc accuracy",
                 "freeze step of k"):
        assert what in text, text
    assert len(problems) == 6, text
    # the same differences against a golden file made with another transformers: named first
    other = {**doc, "versions": {**doc["versions"], "transformers": "0.0.1"}}
    problems = golden.compare(other, bad)
    assert len(problems) == 7 and problems[0].startswith("installed versions differ"), problems[0]
    assert "transformers" in problems[0] and "0.0.1" in problems[0] and "torch" not in problems[0]
    assert golden.compare(other, ok) == []  # no difference in numbers: no note either

    (runs / "m" / "fp" / "seed0" / "train.json").unlink()
    assert golden.main(["check", str(runs), str(gold)]) == 1
    assert "m/fp/seed0: missing" in capsys.readouterr().out


def test_committed_golden_file_matches_local_smoke_runs():
    """The committed golden file agrees with the smoke runs of this checkout (when they exist)."""
    doc = json.loads(GOLDEN.read_text())
    assert doc["tolerances"]["loss_rel"] <= 0.02 and doc["tolerances"]["flops_rel"] <= 0.001
    assert {"tiny-qwen3/fp/seed0", "tiny-qwen3/fp-grades/seed0"} <= set(doc["runs"])
    runs = ROOT / "results" / "runs" / "smoke"
    if not list(runs.glob("*/*/seed*/train.json")):
        pytest.skip("no smoke runs in results/runs/smoke (run: snakemake --cores all --configfile config/smoke.yaml)")
    # runs of the `compare` target (same folder) are not golden; only the main target's are
    from grades import workflow as gw

    cfg = gw.load(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()))
    main = {f"{r.model}/{r.slug}/seed{r.seed}" for r in gw.runs(cfg)} | {f"{m}/base" for m in cfg["models"]}
    actual = {k: v for k, v in golden.extract(runs).items() if k in main}
    assert golden.compare(doc, actual) == []


def test_golden_accuracy_takes_acc_and_generation_exact_match(tmp_path):
    from grades import golden

    (tmp_path / "eval.json").write_text(json.dumps({"tasks": {
        "shapes_mc": {"acc": 0.5, "acc_norm": 0.4}, "shapes_gen": {"exact_match": 0.25}, "odd": {"f1": 0.3}}}))
    assert golden._accuracy(tmp_path) == {"shapes_gen": 0.25, "shapes_mc": 0.5}
