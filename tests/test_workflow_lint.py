"""The workflow's own conventions: Snakemake's linter and snakefmt pass, on a fresh clone.

`snakemake --lint` runs for every shipped profile with the released GradES peer
(``.peers/``, installed by scripts/setup.sh) absent, as on a fresh clone: a compare-only
method's optional dependency must not stop the workflow from parsing, and no lint is
allowed. Every shell rule has a conda environment (workflow/envs/grades.yaml) that
``--use-conda`` really uses: its jobs then run that environment's ``python`` with grades
imported from the checkout. Rules also carry a benchmark and start their command with the
job's thread environment. About a minute.
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
ENV_FILE = ROOT / "workflow" / "envs" / "grades.yaml"


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
@pytest.mark.slow
def test_lint_on_a_fresh_clone(profile, tmp_path):
    env = {**os.environ, "GRADES_OFFICIAL_DIR": str(tmp_path / "no-peers")}  # .peers/ not installed yet
    r = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(ROOT / "Snakefile"),
                        "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / f"{profile}.yaml")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "WorkflowError" not in out, out[-3000:]
    assert not lints(out), f"snakemake --lint ({profile}): {lints(out)}"
    assert "Congratulations" in out


def test_snakefmt_check():
    pytest.importorskip("snakefmt", reason="pip install 'grades-harness[dev]' (snakefmt)")
    r = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"run `snakefmt Snakefile workflow/`:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"


def test_every_shell_rule_has_the_conda_env_a_benchmark_and_the_thread_environment():
    blocks = rule_blocks()
    assert {"prepare_data", "prepare_model", "train", "evaluate", "evaluate_base", "evaluate_vlm",
            "evaluate_vlm_base", "tables", "figures", "multimodal", "compare", "prefetch", "bench"} <= set(blocks)
    for name, block in blocks.items():
        if "\n    shell:" in block:
            assert "\n    conda:\n        ENV\n" in block, f"rule {name} has no conda environment"
            # `partial` has no output at all, so that it runs whenever asked for: a benchmark file would be one
            assert "\n    benchmark:" in block or name == "partial", f"rule {name} computes but records no benchmark"
            # torch, OpenMP and MKL threads = the job's threads; idle OpenMP threads sleep
            assert "env=job_env" in block and re.search(r'shell:\n\s+"\{params\.env\} ', block), name


def _requirement_names(reqs) -> set[str]:
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_conda_env_lists_the_project_dependencies():
    """workflow/envs/grades.yaml holds what the jobs import: pyproject's dependencies and its
    data, eval and report extras (torch as conda-forge's pytorch)."""
    import tomllib

    import yaml

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    want = _requirement_names(project["dependencies"])
    for extra in ("data", "eval", "report"):
        want |= _requirement_names(project["optional-dependencies"][extra])
    env = yaml.safe_load(ENV_FILE.read_text())
    conda = _requirement_names(d for d in env["dependencies"] if isinstance(d, str))
    pip = _requirement_names(next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)))
    assert (pip | {"torch"} if "pytorch" in conda else pip) == want


FAKE_CONDA = """#!/bin/sh
# answers what snakemake asks conda in a dry run (no environment is created)
case "$*" in
  "--version") echo "conda 24.9.2";;
  "info --json") echo '{"conda_prefix": "/nonexistent", "root_prefix": "/nonexistent", "envs_dirs": [], "platform": "linux-64"}';;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}';;
  *) echo "fake conda: $*" >&2; exit 1;;
esac
"""


@pytest.mark.slow
def test_use_conda_runs_the_environments_python_with_this_checkout(tmp_path):
    """--use-conda: every job runs `python` from its conda environment and imports grades from
    the checkout (PYTHONPATH); without it, the interpreter running Snakemake. conda itself is not
    installed here: a stand-in answers snakemake's version and settings queries in a dry run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "conda").write_text(FAKE_CONDA)
    (bin_dir / "conda").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GRADES_OFFICIAL_DIR": str(tmp_path / "np")}
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "2", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / "smoke.yaml")]
    conda = subprocess.run(cmd + ["--use-conda"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert conda.returncode == 0, conda.stdout[-3000:] + conda.stderr[-3000:]
    shells = [ln for ln in (conda.stdout + conda.stderr).splitlines() if "-m grades." in ln]
    assert shells and all(f"PYTHONPATH={ROOT}" in ln and " python -m grades." in ln for ln in shells), shells[:3]
    plain = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    shells = [ln for ln in (plain.stdout + plain.stderr).splitlines() if "-m grades." in ln]
    assert shells and all(sys.executable in ln and "PYTHONPATH" not in ln for ln in shells), shells[:3]
