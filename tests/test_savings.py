"""Savings beyond a plain freeze (grades.savings): each keeps the model's outputs and the
remaining gradients equal to the plain freeze, and removes the work it claims to."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from grades.components import discover_components
from grades.config import ConfigError
from grades.controller import Controller
from grades.flops import step_flops
from grades.freezer import Freezer
from grades.methods import build_method
from grades.savings import Savings, SavingsConfig, prune_param_groups
from tinymodels import add_lora, batch, build_tiny, prepare_tiny

LAYERS = 3


def _model(lora: bool = False, freeze_embeddings: bool = False):
    m = build_tiny("qwen3", num_hidden_layers=LAYERS, attn_implementation="eager")
    if freeze_embeddings:
        m.get_input_embeddings().weight.requires_grad_(False)
    if lora:
        m = add_lora(m)
    m.train()
    return m


def _freeze(model, layers=(), extra=(), savings: dict | None = None, optimizer=None):
    """Freeze every component of ``layers`` and the components named in ``extra``."""
    comps = discover_components(model)
    fr = Freezer(comps, optimizer)
    for i, c in enumerate(comps):
        if c.layer in layers or c.short in extra:
            fr.freeze(i, step=1)
    sv = None
    if savings is not None:
        sv = Savings(model, comps, SavingsConfig(**savings), optimizer)
        sv.sync(fr.frozen)
    return comps, fr, sv


def _fwd_bwd(model, seed=0):
    model.zero_grad(set_to_none=True)
    b = batch(2, 16, seed=seed)
    with FlopCounterMode(display=False) as fc:
        out = model(**b)
        out.loss.backward()
    return out.logits.detach(), fc.get_total_flops()


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ------------------------------------------------------------ truncation
def test_truncation_keeps_outputs_and_remaining_gradients():
    plain, trunc = _model(freeze_embeddings=True), _model(freeze_embeddings=True)
    _freeze(plain, layers=(0,))
    _, _, sv = _freeze(trunc, layers=(0,), savings={"truncate_backward": True})
    assert sv.truncation.k == 1
    assert sv.summary()["truncation_frozen_params"] == 4  # layer 0: input, post-attention, q and k norms
    lp, fp = _fwd_bwd(plain)
    lt, ft = _fwd_bwd(trunc)
    torch.testing.assert_close(lt, lp, rtol=0, atol=0)  # a detach changes no value
    gp, gt = _grads(plain), _grads(trunc)
    # the plain freeze still back-propagates into layer 0 (its norm weights train)
    assert any(n.startswith("model.layers.0.") for n in gp)
    assert not any(n.startswith("model.layers.0.") for n in gt)
    for n, g in gt.items():
        torch.testing.assert_close(g, gp[n], rtol=1e-5, atol=1e-7)
    assert set(gt) == {n for n in gp if not n.startswith("model.layers.0.")}
    # backward FLOPs of the frozen prefix are gone, as the analytic model predicts
    assert ft < fp
    assert ft == pytest.approx(step_flops(trunc, 2, 16).total, rel=0.01)


def test_truncation_needs_a_fully_frozen_prefix_and_frozen_embeddings():
    m = _model(freeze_embeddings=False)  # tied embeddings train: nothing may be cut
    _, _, sv = _freeze(m, layers=(0, 1), savings={"truncate_backward": True})
    assert sv.truncation.k == 0
    m = _model(freeze_embeddings=True)  # layer 0 only partly frozen: no prefix
    _, _, sv = _freeze(m, layers=(1,), extra=("L0.q",), savings={"truncate_backward": True})
    assert sv.truncation.k == 0


def test_truncation_grows_with_the_prefix_and_covers_all_layers():
    m = _model(freeze_embeddings=True)
    comps, fr, sv = _freeze(m, layers=(0,), savings={"truncate_backward": True})
    assert sv.truncation.k == 1
    for i, c in enumerate(comps):
        if c.layer in (1, 2):
            fr.freeze(i, step=2)
    sv.sync(fr.frozen)
    assert sv.truncation.k == LAYERS
    _fwd_bwd(m)
    trained = {n for n, p in m.named_parameters() if p.grad is not None}
    assert trained == {"model.norm.weight", "lm_head.weight"}  # only what sits above the last layer


# ---------------------------------------------------------------- LoRA merge
def test_lora_merge_keeps_outputs_and_remaining_gradients():
    plain, merged = _model(lora=True), _model(lora=True)
    frozen = dict(layers=(0,), extra=("L1.q", "L1.down"))
    _freeze(plain, **frozen)
    _, _, sv = _freeze(merged, savings={"merge_lora_on_freeze": True}, **frozen)
    assert sv.merged_modules == 9 and sv.merged_adapters == 9
    lp, fp = _fwd_bwd(plain)
    lm, fm = _fwd_bwd(merged)
    torch.testing.assert_close(lm, lp, rtol=1e-5, atol=1e-5)
    gp, gm = _grads(plain), _grads(merged)
    assert set(gp) == set(gm) and gp
    for n in gp:
        torch.testing.assert_close(gm[n], gp[n], rtol=1e-4, atol=1e-6)
    assert fm < fp  # the merged adapters' matmuls are gone from the forward pass
    assert fm == pytest.approx(step_flops(merged, 2, 16).total, rel=0.01)
    # the adapter tensors are still there, so the adapter saves as usual
    sd = {k for k in merged.state_dict() if "lora_A" in k}
    assert len(sd) == 7 * LAYERS


def test_lora_merge_skips_modules_with_an_unfrozen_adapter():
    m = _model(lora=True)
    comps = discover_components(m)
    fr = Freezer(comps)
    sv = Savings(m, comps, SavingsConfig(merge_lora_on_freeze=True))
    sv.sync(fr.frozen)
    assert sv.merged_modules == 0
    fr.freeze(0, step=1)
    sv.sync(fr.frozen)
    sv.sync(fr.frozen)  # idempotent
    assert sv.merged_modules == 1 and comps[0].module.merged


# -------------------------------------------------------- optimizer pruning
def test_pruned_optimizer_takes_the_same_steps():
    models, opts = [], []
    for prune in (False, True):
        m = _model()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1,
                                foreach=True)
        # one step with everything trainable, so the frozen params have optimizer state to release
        m(**batch(2, 16, seed=5)).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _, _, sv = _freeze(m, layers=(1,), extra=("L0.v",),
                           savings={"prune_optimizer": True} if prune else None, optimizer=opt)
        models.append(m)
        opts.append(opt)
    n_all = sum(len(g["params"]) for g in opts[0].param_groups)
    n_pruned = sum(len(g["params"]) for g in opts[1].param_groups)
    assert n_pruned == n_all - 8  # 7 matrices of layer 1 + L0.v
    assert all(p.requires_grad for g in opts[1].param_groups for p in g["params"])
    for step in range(3):
        for m, opt in zip(models, opts):
            m(**batch(2, 16, seed=step)).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (n, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=n)


def test_pruned_optimizer_resumes_through_the_controller(tmp_path):
    """A checkpointed optimizer with pruned groups loads into a fresh one after the controller re-prunes."""
    def setup():
        m = _model()
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        method = build_method({"name": "grades", "tau": 1e9, "alpha": 0.0, "max_frozen_ratio": 1.0})
        ctl = Controller(m, opt, method, planned_steps=10, savings={"prune_optimizer": True})
        return m, opt, ctl

    m, opt, ctl = setup()
    for step in (1, 2):
        m(**batch(2, 16, seed=step)).loss.backward()
        ctl.before_optimizer_step(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ctl.after_optimizer_step(step)
    assert ctl.freezer.n_frozen == len(ctl.components)  # tau=1e9 froze everything at step 2
    assert ctl.summary()["savings"]["pruned_optimizer_params"] > 0
    state = {"ctl": ctl.state_dict(), "opt": opt.state_dict()}
    m2, opt2, ctl2 = setup()
    ctl2.load_state_dict(state["ctl"])
    opt2.load_state_dict(state["opt"])  # group sizes match because ctl2 pruned first
    assert [len(g["params"]) for g in opt2.param_groups] == [len(g["params"]) for g in opt.param_groups]


def test_prune_param_groups_keeps_empty_groups():
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([{"params": [p]}, {"params": [q]}], lr=0.1)
    q.requires_grad_(False)
    assert prune_param_groups(opt) == 1
    assert [len(g["params"]) for g in opt.param_groups] == [1, 0]
    p.grad = torch.ones(2)
    opt.step()  # an empty group is fine


# ------------------------------------------------------------------ config
def test_savings_config_is_validated():
    assert not SavingsConfig().any
    with pytest.raises(ConfigError, match="truncate_backward"):
        SavingsConfig(truncate_backward="yes")
    with pytest.raises(ConfigError, match="did you mean 'prune_optimizer'"):
        SavingsConfig.from_dict({"prune_optimiser": True})


def test_run_schema_accepts_savings_and_omits_them_by_default():
    from grades.schema import validate

    base = {"model": {"source": "tiny:qwen3"}, "data": {"source": "synthetic:world-mc"}}
    assert "savings" not in validate(base, "run")  # existing run configs keep their hash
    cfg = validate({**base, "savings": {"prune_optimizer": True}}, "run")
    assert cfg["savings"] == {"truncate_backward": False, "merge_lora_on_freeze": False, "prune_optimizer": True}
    with pytest.raises(ConfigError, match="prune_optimizer"):
        validate({**base, "savings": {"prune_optimiser": True}}, "run")


# ------------------------------------------------------------ training loop
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("savings"), data={"n_train": 32})


def _run_cfg(tiny_run, **over):
    from grades.train import load_run_config

    _, model, data = tiny_run
    raw = {"name": "savings", "model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"},
           "mode": "lora", "lora": {"r": 4, "alpha": 8}, "steps": 12, "batch_size": 4, "seq_len": 96,
           "threads": 1, "optim": {"lr": 1.0e-2}, "method": {"name": "bottom-k", "k": 1}}
    return load_run_config({**raw, **over})


def test_training_loop_with_all_savings_matches_the_plain_freeze_and_resumes(tiny_run, monkeypatch):
    from grades.train import run

    d = tiny_run[0]
    all_on = {"truncate_backward": True, "merge_lora_on_freeze": True, "prune_optimizer": True}
    plain = run(_run_cfg(tiny_run), d / "plain", progress=False)
    saved = run(_run_cfg(tiny_run, savings=all_on), d / "savings", progress=False)
    s = saved["grades"]["savings"]
    assert s["merged_modules"] == 7 and s["truncated_layers"] == 1 and s["pruned_optimizer_params"] == 14
    assert "savings" not in plain["grades"]
    assert len(plain["loss_curve"]) == len(saved["loss_curve"]) == 12
    for (_, a), (_, b) in zip(plain["loss_curve"], saved["loss_curve"]):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    assert saved["flops"]["total"] < plain["flops"]["total"]  # merged adapters: no forward matmuls
    # a failure after a checkpoint, then a rerun: the frozen set, merges and pruned groups are restored
    cfg = _run_cfg(tiny_run, savings=all_on, checkpoint_every=4)
    monkeypatch.setenv("GRADES_TEST_FAIL_AT_STEP", "6")
    with pytest.raises(RuntimeError):
        run(cfg, d / "resumed", progress=False)
    monkeypatch.delenv("GRADES_TEST_FAIL_AT_STEP")
    resumed = run(cfg, d / "resumed", progress=False)
    assert resumed["resumed_from_steps"] == [4] and len(resumed["loss_curve"]) == 12
    for (_, a), (_, b) in zip(saved["loss_curve"], resumed["loss_curve"]):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
    assert resumed["grades"]["savings"]["merged_modules"] == 7
