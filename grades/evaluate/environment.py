"""The process an evaluation runs in: HF offline, quiet libraries, torch threads, versions.

Hugging Face is offline unless asked otherwise; the torch thread count is temporary; the
versions are those of the packages that score (recorded in eval.json)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from importlib import metadata

_TRUE = ("1", "true", "yes", "on")


def set_offline(force: bool = False) -> None:
    """Default HF_HUB_OFFLINE / HF_DATASETS_OFFLINE to 1 (an explicit ``=0`` is kept
    unless ``force``) and patch the constants of already-imported HF libraries."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if force:
            os.environ[var] = "1"
        else:
            os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hub_off = hub_offline()
    ds_off = hub_off or os.environ["HF_DATASETS_OFFLINE"].strip().lower() in _TRUE
    if "huggingface_hub" in sys.modules:  # constants are read once, at import
        import huggingface_hub.constants as hc

        hc.HF_HUB_OFFLINE = hub_off
    if "datasets" in sys.modules:
        import datasets.config as dc

        dc.HF_HUB_OFFLINE = ds_off
        if hasattr(dc, "HF_DATASETS_OFFLINE"):
            dc.HF_DATASETS_OFFLINE = ds_off


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


class DropDefaultFewshotNotice(logging.Filter):
    """lm-eval warns "Overwriting default num_fewshot of T from None to 0" on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (str(record.msg).startswith("Overwriting default num_fewshot")
                    and len(args) >= 2 and args[1] is None)


def quiet_libraries() -> None:
    """Warnings only from lm-eval / transformers / datasets; tqdm progress stays."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning,
                            module=r"(transformers|peft|datasets|lm_eval)(\.|$)")
    ev_log = logging.getLogger("lm_eval.evaluator")
    if not any(isinstance(f, DropDefaultFewshotNotice) for f in ev_log.filters):
        ev_log.addFilter(DropDefaultFewshotNotice())
    for name in ("transformers", "datasets", "peft", "accelerate", "huggingface_hub", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except Exception:  # pragma: no cover
        pass
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except Exception:  # pragma: no cover
        pass


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to ``threads`` (when given) inside the block, restored after.

    On a shared CPU oversubscription is ruinous (2 threads on a busy 2-core box: ~10x slower)."""
    import torch

    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def package_version(pkg: str) -> str | None:
    """The installed version of ``pkg``, or None."""
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None
