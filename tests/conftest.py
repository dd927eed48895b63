"""Shared fixtures: tiny models built from configs (no network, no weights); the helpers they use
live in tests/tinymodels.py."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)  # tiny models: one thread is fastest, and robust on a shared CPU

from tinymodels import build_tiny, prepare_tiny  # noqa: E402


@pytest.fixture
def tiny_qwen3():
    return build_tiny("qwen3")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """:func:`tinymodels.prepare_tiny` with the shared options, once per session: ``(model_dir, data_dir)``,
    read-only (a test writes its runs into a directory of its own)."""
    _, model, data = prepare_tiny(tmp_path_factory.mktemp("tiny-world"))
    return model, data
