"""`snakemake --report report.html`: the tables and figures of a finished workflow, browsable.

A finished smoke workflow is faked in a scratch directory: `snakemake --touch` records
Snakemake's metadata for every job of both targets, then the tables and figures are
written (small but real CSV, Markdown, PNG and PDF files). The report is built from
that, opened in headless Chromium (the page is rendered by JavaScript, so its text only
exists in a browser), and must list every table and figure under its category. The
Chromium checks skip when no Chromium is installed (.ci/run installs the Debian package);
tests/test_smoke_workflow.py checks the report of a real smoke run the same way.
About a minute.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from report_page import check_report

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ["Accuracy and efficiency", "Figures", "Multimodal", "Comparison"]
TABLES = ["accuracy", "efficiency", "multimodal", "comparison", "matched"]
FIGURES = ["fig1_layer_signals", "fig3_frozen_fraction", "fig4_signal_by_kind", "freeze_heatmap", "vlm_convergence",
           "pareto_tiny-qwen3", "matched_tiny-qwen3"]
#: every file the smoke profile's report lists (its main target and `compare`)
FILES = [f"{t}.{e}" for t in TABLES for e in ("csv", "md")] + [f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")]
FILES.append("runs.md")  # every planned run and its status (runs.csv is the tables' input, not in the report)


def snakemake(work: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                        str(work), "--configfile", str(ROOT / "config" / "smoke.yaml"), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    return out


def fake_outputs(work: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables, figures = work / "results" / "tables" / "smoke", work / "figures" / "smoke"
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    for t in TABLES:
        (tables / f"{t}.csv").write_text("model,setting,acc\ntiny-qwen3,FP,50.0\n")
        (tables / f"{t}.md").write_text("| model | setting | acc |\n|---|---|---|\n| tiny-qwen3 | FP | 50.0 |\n")
    (tables / "runs.csv").write_text("model,setting,seed,status\ntiny-qwen3,FP,0,ok\n")
    (tables / "runs.md").write_text("| model | setting | seed | status |\n|---|---|---|---|\n| tiny-qwen3 | FP | 0 | ok |\n")
    for f in FIGURES:
        fig = plt.figure(figsize=(2, 2))
        plt.plot([0, 1], [1, 0])
        plt.title(f)
        for ext in ("png", "pdf"):
            fig.savefig(figures / f"{f}.{ext}")
        plt.close(fig)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    work = tmp_path_factory.mktemp("report")
    snakemake(work, "--cores", "1", "--touch", "all", "compare")  # metadata of every job, no job run
    fake_outputs(work)
    out = snakemake(work, "--report", str(work / "report.html"), "all", "compare")
    assert "Report created" in out
    return work / "report.html"


@pytest.mark.slow
def test_report_embeds_every_table_and_figure(report):
    text = report.read_text()
    for name in FILES:
        assert name in text, f"{name} is not in report.html"
    for caption in ("Figure 1 of the paper", "Pareto figures plot accuracy", "share of frozen"):
        assert caption in text, f"caption {caption!r} (workflow/report/*.rst) is not in report.html"


@pytest.mark.slow
def test_report_page_lists_the_tables_and_figures(report, tmp_path):
    check_report(report, tmp_path, FILES, CATEGORIES)
