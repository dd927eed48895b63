"""The run config of one training run: loaded and validated, hashed, and its seed applied.

A run config follows ``grades/schemas/run.schema.yaml``; :func:`load_run_config` also
builds the configured method once, so a bad method name or parameter is refused before
any work. :func:`config_hash` identifies a config in train.json; :func:`resume_hash`
leaves out what may change between an interrupted run and its resumption.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import torch

from ..config import ConfigError
from ..methods import build_method
from ..schema import validate
from ..yamlfile import read_yaml
from .precision import check_precision, precision_name

#: run-config fields that may change between an interrupted run and its resumption
RESUME_FREE = ("threads", "checkpoint_every", "parallel", "dist_timeout_s")


def load_run_config(path_or_dict) -> dict:
    """A validated run config (defaults filled in) from a YAML file or a mapping."""
    if isinstance(path_or_dict, (str, Path)):
        raw = read_yaml(path_or_dict, "run config file")
    else:
        raw = path_or_dict
    cfg = validate(raw, "run", "run config")
    check_sources(cfg)
    method = build_method(cfg["method"])  # validates method name and parameters now, before any work
    check_precision(cfg)  # refuses what cannot run, warns about pure bfloat16
    if not method.supports_sharding and (cfg.get("parallel") == "fsdp" or precision_name(cfg) == "bf16-mixed"):
        raise ConfigError(f"method '{method.name}' cannot read sharded (FSDP) parameters, and this run is sharded "
                          "(parallel: fsdp or precision: bf16-mixed); use parallel: none with precision: fp32")
    return cfg


def check_sources(cfg: dict) -> None:
    """The model and data source specs and their options (not whether a directory exists yet)."""
    from ..data import check_options as data_options
    from ..data import parse_spec as data_spec
    from ..data import source_module
    from ..models import check_options as model_options
    from ..models import parse_spec as model_spec

    try:
        model_options(model_spec(cfg["model"]["source"])[0], cfg["model"]["options"])
        kind, arg = data_spec(cfg["data"]["source"])
        if kind != "jsonl":
            data_options("data", cfg["data"]["options"], source_module(kind, arg).DEFAULTS)
    except ConfigError as e:
        raise ConfigError(f"run config: {e}") from None


def config_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def resume_hash(cfg: dict) -> str:
    """Hash of what determines the training trajectory; a checkpoint resumes only a run with the same.

    ``threads``, ``checkpoint_every``, ``parallel`` and ``dist_timeout_s`` are left out:
    resuming on another core count, with another checkpoint interval, or on another number
    of processes (sharded checkpoints are resharded) is allowed."""
    return config_hash({k: v for k, v in cfg.items() if k not in RESUME_FREE})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
