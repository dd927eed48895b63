"""Build glue: the files the harness ships beside its code go into the wheel as ``grades/_shipped``.

The project's metadata is in pyproject.toml; this file only says which packages and data
files the wheel holds. The workflow (``Snakefile``, ``workflow/``), the workflow profiles
(``config/``), the lm-eval task YAMLs (``evals/``) and the paper's numbers
(``results/paper/``) stay at the top of the repository and are mapped into the wheel
under ``grades/_shipped/`` with the same relative paths, where :mod:`grades.resources`
finds them (in a checkout, and in an editable install, it finds them in place).
"""

from glob import glob

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

#: repository folder -> the files of it that ship (each folder is a data-only package)
SHIPPED = {
    ".": ["Snakefile"],
    "workflow/rules": ["*.smk"],
    "workflow/schemas": ["*.yaml"],
    "workflow/report": ["*.rst"],
    "workflow/envs": ["*.yaml"],
    **{p.rstrip("/"): ["*.yaml"] for p in sorted(glob("workflow/profiles/*/"))},
    "config": ["*.yaml"],
    "evals/tasks": ["*.yaml", "_*_yaml", "*.py"],
    "evals/tasks/hub": ["*.yaml", "_*_yaml", "*.py"],
    "evals/tasks/commonsense": ["*.yaml", "_*_yaml", "*.py"],
    "results/paper": ["*.csv", "*.md"],
}


def _package(folder: str) -> str:
    return "grades._shipped" + ("" if folder == "." else "." + folder.replace("/", "."))


class BuildPy(build_py):
    """Shipped folders hold data only: their Python files (the lm-eval helpers of evals/tasks)
    are copied as data, and the repository root's own (this file) not at all."""

    def find_package_modules(self, package, package_dir):
        if package == "grades._shipped" or package.startswith("grades._shipped."):
            return []
        return super().find_package_modules(package, package_dir)


setup(
    cmdclass={"build_py": BuildPy},
    packages=find_packages(include=["grades", "grades.*"]) + [_package(f) for f in SHIPPED],
    # the other folders follow from this one: grades._shipped.workflow.rules is ./workflow/rules, ...
    package_dir={"grades._shipped": "."},
    package_data={"grades.schemas": ["*.yaml"], **{_package(f): globs for f, globs in SHIPPED.items()}},
)
