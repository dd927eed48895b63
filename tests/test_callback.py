"""GradESCallback inside a real transformers.Trainer on tiny models."""

import csv
import json

import pytest
import torch
from transformers import Trainer, TrainingArguments

from grades import GradESCallback, GradESConfig
from grades.freezer import base_optimizer
from tinymodels import TokenData, add_lora, build_tiny




def _train(model, tmp_path, cfg, max_steps=12):
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=max_steps, per_device_train_batch_size=4,
                             learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, disable_tqdm=True, max_grad_norm=1.0, seed=0)
    cb = GradESCallback(cfg)
    trainer = Trainer(model=model, args=args, train_dataset=TokenData(), callbacks=[cb])
    trainer.train()
    return cb, trainer


def _frozen_params_match(cb, model):
    frozen_ids = {id(p) for c, f in zip(cb.controller.components, cb.controller.freezer.frozen) if f for p in c.params}
    tracked = {id(p) for c in cb.controller.components for p in c.params}
    for p in model.parameters():
        if id(p) in tracked:
            assert p.requires_grad == (id(p) not in frozen_ids)
    return frozen_ids


def test_alpha0_tiny_tau_freezes_nothing_at_first_check(tmp_path):
    model = build_tiny("qwen3")
    cb, trainer = _train(model, tmp_path, GradESConfig(tau=1e-12, alpha=0.0), max_steps=6)
    assert cb.events == []
    assert trainer.state.global_step == 6
    # every check produced a signal; the first delta is undefined, the rest finite
    steps = sorted({s for s, _ in cb.controller.method.signal_history()})
    assert steps == [1, 2, 3, 4, 5, 6]
    first = cb.controller.method.signal_history()[0][1]
    assert torch.isnan(first).all()


def test_alpha0_large_tau_never_freezes_on_undefined_first_delta(tmp_path):
    model = build_tiny("qwen3")
    cb, trainer = _train(model, tmp_path, GradESConfig(tau=1e9, alpha=0.0), max_steps=6)
    assert {e.step for e in cb.events} == {2}, "released code freezes at the fake first 0.0; we must not"


@pytest.mark.parametrize("lora_adapter", [None, "custom_name"])
def test_large_tau_freezes_everything_after_grace_and_stops(tmp_path, lora_adapter):
    model = build_tiny("qwen3")
    if lora_adapter:
        model = add_lora(model, adapter_name=lora_adapter)
    max_steps = 20
    cfg = GradESConfig(tau=1e9, alpha=0.25)
    cb, trainer = _train(model, tmp_path, cfg, max_steps=max_steps)
    grace = 5  # ceil(0.25 * 20)
    n = len(cb.controller.components)
    assert n == 14
    assert len(cb.events) == n and {e.step for e in cb.events} == {grace}
    assert trainer.state.global_step == grace < max_steps
    assert cb.summary()["stop_reason"] == "all components frozen"
    frozen_ids = _frozen_params_match(cb, model)
    opt = base_optimizer(trainer.optimizer)
    assert not any(id(p) in frozen_ids for p in opt.state), "optimizer state of frozen params must be released"
    assert cb.summary()["released_optimizer_bytes"] > 0 or lora_adapter is None
    if lora_adapter:
        assert all(e.component.endswith("_proj") for e in cb.events)
        assert all(c.adapter == lora_adapter for c in cb.controller.components)
    # outputs
    paths = cb.write(tmp_path / "out")
    rows = list(csv.DictReader(open(paths["freeze_events"])))
    assert len(rows) == n and all(int(r["step"]) == grace for r in rows)
    sig = list(csv.DictReader(open(paths["signals"])))
    assert len(sig) == grace * n
    summary = json.loads(paths["summary"].read_text())
    assert summary["frozen"] == n and summary["stop_step"] == grace


def test_partial_freeze_matches_signals(tmp_path):
    """tau between signal values: exactly the components below tau freeze."""
    model = build_tiny("qwen3")
    cb, _ = _train(model, tmp_path, GradESConfig(tau=1e9, alpha=0.0, signal="grad_l1",
                                                 max_frozen_ratio=1.0, record_signals=True), max_steps=1)
    values = cb.controller.method.signal_history()[0][1]
    tau = float(values.median())
    model2 = build_tiny("qwen3")
    cb2, trainer2 = _train(model2, tmp_path, GradESConfig(tau=tau, alpha=0.0, signal="grad_l1"), max_steps=1)
    frozen = {e.component for e in cb2.events}
    names = [c.name for c in cb2.controller.components]
    assert frozen == {names[i] for i, v in enumerate(values.tolist()) if v < tau}
    assert 0 < len(frozen) < len(names)
    _frozen_params_match(cb2, model2)
