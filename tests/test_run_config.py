"""Every bad run config is refused by ``python -m grades.train`` before anything runs.

The message names the field (and the closest valid name for a typo); the exit code is
2; the run directory is never created, so no result file can appear.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from grades import ConfigError
from grades.train import load_run_config, main

GOOD = {
    "name": "ok", "model": {"source": "tiny:qwen3"}, "data": {"source": "synthetic:world-mc"},
    "mode": "lora", "method": {"name": "grades", "tau": 1.0, "alpha": 0.3},
    "optim": {"lr": 1e-3}, "schedule": {"name": "cosine"}, "steps": 10, "batch_size": 4, "seq_len": 64,
}

_DELETE = object()

BAD = [
    # (dotted path, value, words the message must contain)
    ("stepz", 10, ["stepz", "did you mean 'steps'"]),
    ("steps", 0, ["steps", "0"]),
    ("steps", "ten", ["steps", "'ten'"]),
    ("batch_size", -4, ["batch_size", "-4"]),
    ("seq_len", 4, ["seq_len", "4"]),
    ("mode", "full", ["mode", "'full'", "lora"]),
    ("model.source", _DELETE, ["model", "source"]),
    ("model.dtype", "fp8", ["model.dtype", "'fp8'"]),
    ("model.sorce", "x", ["sorce", "did you mean 'source'"]),
    ("data.loss_on", "prompt", ["data.loss_on", "'prompt'"]),
    ("data.too_long", "drop", ["data.too_long", "'drop'"]),
    ("lora.r", 0, ["lora.r", "0"]),
    ("lora.rank", 8, ["lora.rank", "'r'"]),
    ("lora.dropout", 1.5, ["lora.dropout", "1.5"]),
    ("lora.targets", [], ["lora.targets"]),
    ("optim.name", "adam", ["optim.name", "'adam'", "adamw"]),
    ("optim.lr", 0, ["optim.lr", "0"]),
    ("optim.betas", [0.9], ["optim.betas"]),
    ("optim.weight_decay", -0.1, ["optim.weight_decay", "-0.1"]),
    ("schedule.name", "cosin", ["schedule.name", "'cosin'"]),
    ("schedule.warmup_ratio", 2, ["schedule.warmup_ratio", "2"]),
    ("nan_policy", "ignore", ["nan_policy", "'ignore'"]),
    ("checkpoint_every", 0, ["checkpoint_every", "0"]),
    ("method.name", "gradez", ["gradez", "did you mean 'grades'"]),
    ("method.tau", -1.0, ["tau", "-1.0"]),
    ("method.alpha", 1.5, ["alpha", "1.5"]),
    ("method.taus", 1.0, ["taus", "did you mean 'tau'"]),
    ("method.signal", "l1", ["signal", "'l1'"]),
]


def _with(path: str, value) -> dict:
    cfg = copy.deepcopy(GOOD)
    node = cfg
    *parents, leaf = path.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return cfg


def test_the_good_config_is_valid():
    cfg = load_run_config(copy.deepcopy(GOOD))
    assert cfg["steps"] == 10 and cfg["lora"]["r"] == 16 and cfg["method"]["tau"] == 1.0


@pytest.mark.parametrize("path,value,words", BAD, ids=[b[0] for b in BAD])
def test_bad_run_config_names_the_field_and_writes_nothing(tmp_path, capsys, path, value, words):
    assert len(BAD) >= 15
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(_with(path, value)))
    out = tmp_path / "run"
    assert main(["--config", str(cfg_file), "--out", str(out), "--no-progress"]) == 2
    msg = capsys.readouterr().err
    for w in words:
        assert w in msg, f"{w!r} not in message: {msg}"
    assert not out.exists(), "a refused config must not create the run directory"
    # the same refusal in-process, as a ConfigError
    with pytest.raises(ConfigError):
        load_run_config(_with(path, value))


def test_bad_set_override_is_refused_the_same_way(tmp_path, capsys):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(GOOD))
    out = tmp_path / "run"
    assert main(["--config", str(cfg_file), "--out", str(out), "--set", "optim.lrr=1e-4"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
