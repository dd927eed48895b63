"""The workflow's own conventions: Snakemake's linter and snakefmt pass, on a fresh clone.

`snakemake --lint` runs for every shipped profile with the released GradES peer
(``.peers/``, installed by scripts/setup.sh) absent, as on a fresh clone: a compare-only
method's optional dependency must not stop the workflow from parsing. The one lint
Snakemake reports, by design, is "Specify a conda environment or container for each
rule": every rule runs the interpreter that runs Snakemake (``{params.py}``), so the
environment that runs Snakemake is the jobs' environment and per-rule conda directives
would be dead (docs/reference/cli.md, "Conventions of the rules"). Any other lint fails.
Rules also carry a benchmark and start their command with the job's thread environment.
About a minute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
SOFTWARE_LINT = "Specify a conda environment or container for each rule."


def lints(out: str) -> dict[str, list[str]]:
    """{"rule NAME" or "snakefile PATH": [lint titles]} from `snakemake --lint`'s text output
    (its `--lint json` prints nothing in Snakemake 9)."""
    found: dict[str, list[str]] = {}
    item = None
    for line in out.splitlines():
        m = re.match(r"Lints for (rule \S+|snakefile \S+)", line)
        if m:
            item = m.group(1)
            found[item] = []
        elif item and (t := re.match(r"    \* (.+?):?$", line)):
            found[item].append(t.group(1))
    return found


def rule_blocks() -> dict[str, str]:
    """{rule name: its text} of every rule in workflow/rules/*.smk."""
    out = {}
    for f in RULE_FILES:
        for block in re.split(r"^(?=rule )", f.read_text(), flags=re.M)[1:]:
            out[re.match(r"rule (\w+):", block).group(1)] = block
    return out


@pytest.mark.parametrize("profile", ["config", "smoke", "paper"])
def test_lint_on_a_fresh_clone(profile, tmp_path):
    env = {**os.environ, "GRADES_OFFICIAL_DIR": str(tmp_path / "no-peers")}  # .peers/ not installed yet
    r = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(ROOT / "Snakefile"),
                        "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / f"{profile}.yaml")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "WorkflowError" not in out, out[-3000:]
    found = lints(out)
    other = {item: [t for t in titles if t != SOFTWARE_LINT] for item, titles in found.items()}
    assert not any(other.values()), f"snakemake --lint ({profile}): {other}"
    shell_rules = {name for name, block in rule_blocks().items() if "\n    shell:" in block}
    assert {item.removeprefix("rule ") for item in found} <= shell_rules, found
    if not found:
        assert "Congratulations" in out


def test_snakefmt_check():
    pytest.importorskip("snakefmt", reason="pip install 'grades-harness[dev]' (snakefmt)")
    r = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"run `snakefmt Snakefile workflow/`:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"


def test_rules_have_no_conda_directive_and_every_computing_rule_a_benchmark():
    blocks = rule_blocks()
    assert {"prepare_data", "prepare_model", "train", "evaluate", "evaluate_base", "evaluate_vlm",
            "evaluate_vlm_base", "tables", "figures", "multimodal", "compare", "prefetch", "bench"} <= set(blocks)
    for name, block in blocks.items():
        assert "conda:" not in block, f"rule {name}: conda: has no effect here (every rule runs {{params.py}})"
        if "\n    shell:" in block:
            assert "\n    benchmark:" in block, f"rule {name} computes but records no benchmark"
            # torch, OpenMP and MKL threads = the job's threads; idle OpenMP threads sleep
            assert "env=job_env" in block and re.search(r'shell:\n\s+"\{params\.env\} ', block), name
    assert "conda:" not in (ROOT / "Snakefile").read_text()
