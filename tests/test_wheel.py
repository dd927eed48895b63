"""The installed package carries its data: the workflow runs from a wheel, in an empty directory.

A wheel is built and installed into a folder (tests/wheel_install.py); from an empty
working directory, importing that copy, `python -m grades.workflow run -n` dry-runs every
shipped profile (the default without --configfile, smoke with both targets, paper on the
SLURM profile), and the shipped files are where grades.resources says. An editable install
finds them in the checkout. The real smoke run from the wheel is tests/test_smoke_workflow.py.
About two minutes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from wheel_install import ROOT, build_wheel, copy_sources, install, install_editable, installed_env


pytestmark = pytest.mark.slow  # every test builds or installs the package


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    return wheel, install(wheel, tmp / "site")


def run(target: Path, cwd: Path, *args: str, timeout: int = 600) -> str:
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=installed_env(target), capture_output=True, text=True,
                       timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    return out


def planned(profile: str, compare: bool = False) -> set:
    """The runs the checkout's copy of a profile plans (main target, and compare's with compare=True)."""
    import yaml

    from grades import workflow as gw

    cfg = gw.load(yaml.safe_load((ROOT / "config" / f"{profile}.yaml").read_text()))
    return set(gw.runs(cfg)) | (set(gw.compare_runs(cfg)) if compare else set())


def job_stats(out: str) -> dict[str, int]:
    block = out[out.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def test_wheel_holds_the_package_and_its_data(installed):
    import zipfile

    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "grades").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)[:10]}"
    shipped = ["Snakefile", "workflow/schemas/config.schema.yaml", "workflow/profiles/slurm/config.yaml",
               "workflow/profiles/default/config.yaml", "workflow/report/workflow.rst", "config/config.yaml",
               "config/smoke.yaml", "config/paper.yaml", "evals/tasks/world_mc.yaml", "evals/tasks/shapes_images.py",
               "evals/tasks/hub/gqa.yaml", "evals/tasks/hub/vlm_bench.py", "results/paper/thresholds.csv",
               "evals/tasks/cs_siqa_local.yaml", "evals/tasks/cs_local.py", "evals/tasks/commonsense/cs_boolq.yaml",
               "evals/tasks/commonsense/_cs_template_yaml", "evals/tasks/commonsense/cs_protocol.py"]
    shipped += [p.relative_to(ROOT).as_posix() for p in (ROOT / "workflow" / "rules").glob("*.smk")]
    missing = [f for f in shipped if f"grades/_shipped/{f}" not in names]
    assert not missing, f"data files missing from the wheel: {missing}"
    assert "grades/_shipped/setup.py" not in names and "grades/schemas/run.schema.yaml" in names
    assert not [n for n in names if n.startswith("grades/_shipped/results/") and "/paper/" not in n]


def test_installed_copy_finds_its_files(installed, tmp_path):
    _, target = installed
    out = run(target, tmp_path, "-c", "import grades, grades.resources as r; print(grades.__file__); "
              "print(r.installed(), r.snakefile(), r.default_configfile(), r.tasks_dir(), r.paper_dir())")
    file, info = out.strip().splitlines()[-2:]
    assert file.startswith(str(target)), f"imported {file}, not the installed copy"
    shipped = target / "grades" / "_shipped"
    assert info.split() == ["True", str(shipped / "Snakefile"), str(shipped / "config" / "config.yaml"),
                            str(shipped / "evals" / "tasks"), str(shipped / "results" / "paper")]
    assert run(target, tmp_path, "-m", "grades.workflow", "snakefile").strip() == str(shipped / "Snakefile")


def test_dry_run_every_profile_from_an_empty_directory(installed, tmp_path):
    _, target = installed
    shipped = target / "grades" / "_shipped"
    # the default profile, without --configfile: config/config.yaml comes from the package
    out = run(target, tmp_path, "-m", "grades.workflow", "run", "-n", "--cores", "2")
    assert f"Snakefile: {shipped / 'Snakefile'}" in out and str(shipped / "config" / "config.yaml") in out
    stats = job_stats(out)
    assert stats["train"] == len(planned("config")) and stats["tables"] == stats["figures"] == 1
    # smoke, both targets; the checkout's path config/smoke.yaml resolves to the shipped copy
    out = run(target, tmp_path, "-m", "grades.workflow", "run", "-n", "--cores", "2", "all", "compare",
              "--configfile", "config/smoke.yaml")
    assert str(shipped / "config" / "smoke.yaml") in out
    stats = job_stats(out)
    assert stats["compare"] == stats["tables"] == stats["multimodal"] == 1
    assert stats["train"] == len(planned("smoke", compare=True))
    # paper, on the SLURM profile shipped in workflow/profiles/slurm
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install 'grades-harness[slurm]'")
    out = run(target, tmp_path, "-m", "grades.workflow", "run", "-n", "--configfile", "config/paper.yaml",
              "--profile", "workflow/profiles/slurm", "all", "prefetch")
    assert str(shipped / "workflow" / "profiles" / "slurm") in out
    stats = job_stats(out)
    assert stats["train"] == 36 and stats["prefetch"] == 1 and stats["total"] == 130
    # the paper's numbers come from the package too
    assert f"--paper-dir {shipped / 'results' / 'paper'}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [".snakemake"], "a dry run wrote files"


def test_editable_install_finds_the_checkout(tmp_path):
    """`pip install -e .` (scripts/setup.sh): the package and its data files are the checkout's
    (here a copy of it, so that the checkout gets no egg-info)."""
    import os
    import sysconfig

    src = copy_sources(tmp_path / "checkout")
    site = install_editable(src, tmp_path / "prefix")
    code = (f"import site, sys; sys.path[:] = [p for p in sys.path if p not in ('', {str(ROOT)!r})]; "
            f"site.addsitedir({str(site)!r}); sys.path.append({sysconfig.get_paths()['purelib']!r}); "
            f"import grades.resources as r; "
            f"print(r.__file__, r.installed(), r.root(), r.snakefile().is_file())")
    # -S, and the venv's site-packages as a plain path (its .pth files unread): the venv's own editable
    # install of the checkout would win over the copy's otherwise; torch and the rest still import
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [str(src / "grades" / "resources.py"), "False", str(src), "True"]
