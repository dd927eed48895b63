"""The smoke profile end to end, from the installed wheel: prepare -> train -> lm-eval -> tables; then `compare`.

The project's wheel is built and installed into a scratch folder (tests/wheel_install.py),
and `python -m grades.workflow run --cores all --configfile config/smoke.yaml` runs the
real workflow from an empty working directory, offline, importing that copy: the
packaged install is what runs. Then the acceptance criteria on the tables it produced
(the tiny language model's and the tiny VLM's multimodal table and figure), the run
numbers against tests/golden/smoke.json, that a rerun with nothing changed plans no job,
and the HTML report of the run. About 6 minutes on 2 CPU cores (docs/results/performance.md),
plus the `compare` target (8 more tiny runs and the matched-budget ones).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from report_page import check_report
from wheel_install import build_wheel, install, installed_env

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    return install(build_wheel(tmp), tmp / "site")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, installed):
    work = tmp_path_factory.mktemp("smoke")
    r = _snakemake(work, installed)
    if r.returncode != 0:
        logs = sorted((work / "results" / "logs").rglob("*.log"))
        tails = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs)
        pytest.fail(f"smoke workflow failed:\n{r.stderr[-4000:]}\n{tails}")
    assert f"Snakefile: {installed}" in r.stdout + r.stderr, "the workflow did not run from the installed wheel"
    return work


def _snakemake(workdir: Path, installed: Path, *args: str) -> subprocess.CompletedProcess:
    """The packaged workflow in ``workdir``: `python -m grades.workflow run` with the installed copy
    on PYTHONPATH. The released GradES of the compare target is the checkout's .peers/ (scripts/setup.sh)."""
    from grades.methods.official import peer_dir

    cmd = [sys.executable, "-m", "grades.workflow", "run", "--configfile", "config/smoke.yaml", "--cores", "all", *args]
    env = installed_env(installed, GRADES_OFFICIAL_DIR=str(peer_dir()))
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)


def test_smoke_tables_meet_acceptance(smoke_run):
    tables = smoke_run / "results" / "tables" / "smoke"
    for name in ("accuracy", "efficiency"):
        assert (tables / f"{name}.csv").stat().st_size > 0
        assert (tables / f"{name}.md").read_text().count("\n|") >= 4
    acc = pd.read_csv(tables / "accuracy.csv")
    acc = acc[acc.model == "tiny-qwen3"]
    eff = pd.read_csv(tables / "efficiency.csv")
    assert set(eff.model) == {"tiny-qwen3", "tiny-vlm"}
    eff = eff[eff.model == "tiny-qwen3"].set_index("setting")
    assert set(eff.index) == {"FP", "FP+GradES", "LoRA", "LoRA+GradES"}

    fp = acc[acc.setting == "FP"].iloc[0]
    chance = 1 / 3  # world_mc has three choices
    assert fp.acc - chance > 2 * fp.acc_stderr, f"FP accuracy {fp.acc:.3f} ± {fp.acc_stderr:.3f} not above chance"

    for grades, base in (("FP+GradES", "FP"), ("LoRA+GradES", "LoRA")):
        assert eff.loc[grades, "frozen_ratio"] > 0, f"{grades} froze nothing"
        assert eff.loc[base, "frozen_ratio"] == 0
        assert eff.loc[grades, "flops_total"] < eff.loc[base, "flops_total"], f"{grades} did not save FLOPs"


def test_smoke_run_contract(smoke_run):
    import json

    run = smoke_run / "results" / "runs" / "smoke" / "tiny-qwen3" / "fp-grades" / "seed0"
    t = json.loads((run / "train.json").read_text())
    assert t["status"] == "ok" and t["steps_run"] <= t["steps_planned"]
    assert t["flops"]["total"] > 0 and t["peak_rss_bytes"] > 0 and t["config_hash"]
    events = pd.read_csv(run / "freeze_events.csv")
    assert len(events) > 0 and (events.step >= 0.3 * t["steps_planned"]).all(), "a freeze inside the grace period"
    sig = pd.read_csv(run / "signals.csv")
    assert {"step", "component", "layer", "kind", "type", "tower", "value"} <= set(sig.columns)
    assert (run / "model" / "config.json").exists()
    lora = smoke_run / "results" / "runs" / "smoke" / "tiny-qwen3" / "lora" / "seed0"
    assert (lora / "adapter" / "adapter_config.json").exists()
    e = json.loads((lora / "eval.json").read_text())
    assert e["backend"] == "hf" and "world_mc" in e["tasks"]
    for rule in ("train", "evaluate"):
        assert list((smoke_run / "results" / "benchmarks" / "smoke" / rule).rglob("*.tsv")), f"no benchmark for {rule}"


def test_smoke_multimodal_table_and_figure(smoke_run):
    """The tiny VLM under FP, FP+GradES, LoRA, LoRA+GradES: accuracy above chance, GradES
    freezes in both towers and saves FLOPs, and the VLM convergence figure exists."""
    import json

    tables = smoke_run / "results" / "tables" / "smoke"
    mm = pd.read_csv(tables / "multimodal.csv").set_index("setting")
    assert list(mm.index) == ["Base", "FP", "FP+GradES", "LoRA", "LoRA+GradES"]
    assert (tables / "multimodal.md").read_text().count("\n| tiny-vlm |") >= 5
    for s in ("FP", "FP+GradES", "LoRA", "LoRA+GradES"):
        r = mm.loc[s]
        assert r.acc - r.chance > 3 * r.acc_stderr, f"{s}: accuracy {r.acc:.1f} ± {r.acc_stderr:.1f} not above chance"
        assert r.flops_vision > 0 and r.train_time_s > 0
        # short answers through lm-eval's hf-multimodal backend: learnt too (the base model answers 0%)
        assert r.gen_em - 3 * r.gen_em_stderr > mm.loc["Base", "gen_em"], s
    for grades, base in (("FP+GradES", "FP"), ("LoRA+GradES", "LoRA")):
        assert mm.loc[grades, "frozen_vision"] > 0 and mm.loc[grades, "frozen_language"] > 0, grades
        assert mm.loc[grades, "flops_train"] < mm.loc[base, "flops_train"]
    fig = smoke_run / "figures" / "smoke"
    assert (fig / "vlm_convergence.png").stat().st_size > 10_000 and (fig / "vlm_convergence.pdf").exists()
    run = smoke_run / "results" / "runs" / "smoke" / "tiny-vlm"
    e = json.loads((run / "lora" / "seed0" / "eval.json").read_text())
    assert e["backend"] == "grades-vlm" and e["adapter"] and "shapes_mc" in e["tasks"]
    assert e["tasks"]["shapes_gen"]["backend"] == "lm-eval hf-multimodal" and e["tasks"]["shapes_gen"]["n"] == 300
    assert (run / "fp" / "seed0" / "model" / "processor_config.json").exists()
    assert set(pd.read_csv(run / "fp-grades" / "seed0" / "freeze_events.csv").tower) == {"language", "vision"}


def test_smoke_rerun_does_nothing(smoke_run, installed):
    r = _snakemake(smoke_run, installed, "-n")
    assert r.returncode == 0, r.stderr
    assert "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


def test_smoke_matches_golden_values(smoke_run):
    """Losses, freeze steps, FLOPs and accuracy of a fresh smoke run, within the golden file's tolerances.

    After a deliberate change of these numbers, regenerate the file from the new runs:
    python -m grades.golden update results/runs/smoke tests/golden/smoke.json
    """
    import json

    from grades import golden

    doc = json.loads((ROOT / "tests" / "golden" / "smoke.json").read_text())
    import yaml

    from grades import workflow as gw

    # only the main target's runs are golden, not the compare target's (same folder)
    cfg = gw.load(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()))
    main = {f"{r.model}/{r.slug}/seed{r.seed}" for r in gw.runs(cfg)} | {f"{m}/base" for m in cfg["models"]}
    actual = {k: v for k, v in golden.extract(smoke_run / "results" / "runs" / "smoke").items() if k in main}
    problems = golden.compare(doc, actual)
    assert not problems, "smoke run differs from tests/golden/smoke.json:\n" + "\n".join(problems)


def test_smoke_report(smoke_run, installed, tmp_path):
    """`snakemake --report report.html` of the finished run lists its tables and figures (Chromium)."""
    r = _snakemake(smoke_run, installed, "--report", str(tmp_path / "report.html"))
    assert r.returncode == 0 and (tmp_path / "report.html").stat().st_size > 100_000, (r.stdout + r.stderr)[-3000:]
    files = [f"{t}.{e}" for t in ("accuracy", "efficiency", "multimodal") for e in ("csv", "md")]
    files += [f"{f}.{e}" for f in ("fig1_layer_signals", "fig3_frozen_fraction", "fig4_signal_by_kind",
                                   "freeze_heatmap", "vlm_convergence") for e in ("png", "pdf")]
    check_report(tmp_path / "report.html", tmp_path, files, ["Accuracy and efficiency", "Figures", "Multimodal"])


def test_smoke_compare_target(smoke_run, installed):
    """The second target: reuses the main LoRA runs, adds the other methods and the tau sweep
    (about 8 more tiny runs), then the comparison table and the Pareto figure."""
    runs = smoke_run / "results" / "runs" / "smoke" / "tiny-qwen3"
    shared = (runs / "lora-grades" / "seed0" / "train.json").stat().st_mtime
    r = _snakemake(smoke_run, installed, "compare")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert (runs / "lora-grades" / "seed0" / "train.json").stat().st_mtime == shared, "a shared run was redone"
    tab = pd.read_csv(smoke_run / "results" / "tables" / "smoke" / "comparison.csv")
    assert {"none", "grades", "es", "grades-weight", "grades-official", "autofreeze", "freezeout",
            "bottom-k"} <= set(tab.method)
    assert {"LoRA+GradES[tau=1.0]", "LoRA+GradES[tau=4.0]"} <= set(tab.setting)
    assert list(tab["rank"]) == list(range(1, len(tab) + 1)) and tab.acc.notna().all()
    assert tab.best_acc.sum() >= 1 and tab.pareto_time.any() and tab.pareto_flops.any()
    assert "**" in (smoke_run / "results" / "tables" / "smoke" / "comparison.md").read_text()
    png = smoke_run / "figures" / "smoke" / "pareto_tiny-qwen3.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = _snakemake(smoke_run, installed, "-n", "compare")
    assert "Nothing to be done" in again.stdout + again.stderr
