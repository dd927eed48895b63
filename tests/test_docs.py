"""The documentation: the site builds without a warning, and the README stays a first screen.

`mkdocs build --strict` fails on any broken link, missing anchor, page outside the nav,
unresolved API reference or missing included file (results/record/...). The README's two
commands are the ones CI (.ci/run) and users rely on: they must stay textually identical.
A few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

SETUP = "python3 -m venv .venv && . .venv/bin/activate && bash scripts/setup.sh"
MAIN_COMMAND = f"{SETUP} && snakemake --cores all"
TEST_COMMAND = f"{SETUP} && bash scripts/test.sh"
MAX_README_LINES = 120


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    # the recorded tables were included (pymdownx.snippets), not left as a literal --8<-- line
    default = (site / "results" / "default" / "index.html").read_text()
    assert "--8&lt;--" not in default and "--8<--" not in default
    assert "smollm2-135m" in default and "max_steps" in default
    # the API pages were rendered from the docstrings
    assert "GradESConfig" in (site / "reference" / "api" / "config" / "index.html").read_text()


def test_readme_is_a_first_screen():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"


def test_readme_commands_are_the_ones_ci_runs():
    blocks = _bash_blocks(README.read_text())
    assert MAIN_COMMAND in blocks, f"README.md lost the main-job command {MAIN_COMMAND!r}"
    assert TEST_COMMAND in blocks, f"README.md lost the test command {TEST_COMMAND!r}"
    # CI runs the same setup and test scripts as the README's test command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh" in ci and "bash scripts/test.sh" in ci
    assert (ROOT / "scripts" / "setup.sh").is_file() and (ROOT / "scripts" / "test.sh").is_file()
    # the getting-started page shows the same two commands
    started = _bash_blocks((ROOT / "docs" / "getting-started.md").read_text())
    assert MAIN_COMMAND in started and TEST_COMMAND in started


def test_readme_links_resolve():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "README.md links into docs/"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
