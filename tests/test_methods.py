"""The registered stopping / freezing methods: decisions, parameters, and the released peer."""

import csv
import json
import math

import pytest
import torch

from tinymodels import add_lora, build_tiny
from grades.config import ConfigError
from grades.controller import Controller
from grades.methods import REGISTRY, build_method
from grades.methods.bottomk import layer_units


# ------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matmuls: one thread is much faster than two on a shared, busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(spec, steps=30, layers=2, lr=1e-3, stop=True, lora=False):
    """A deterministic loop: same seed, same batches, AdamW with a linearly decaying lr."""
    model = build_tiny("qwen3", num_hidden_layers=layers)
    if lora:
        model = add_lora(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / (2 * steps))
    ctl = Controller(model, opt, build_method(spec), steps)
    data = torch.randint(0, 128, (64, 16), generator=torch.Generator().manual_seed(0))
    for step in range(1, steps + 1):
        i = (4 * step) % 64
        x = data[i:i + 4]
        model(input_ids=x, labels=x).loss.backward()
        ctl.before_optimizer_step(step)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ctl.after_optimizer_step(step)
        if stop and ctl.should_stop:
            break
    return ctl


def _events(ctl):
    return [(e.step, e.component) for e in ctl.events]


def _layer_of(ctl, name):
    return next(c.layer for c in ctl.components if c.name == name)


def _synthetic(spec, layers, grads, steps, planned=100):
    """Drive a gradient-reading method with hand-set gradients: grads(step) -> value per layer."""
    model = build_tiny("qwen3", num_hidden_layers=layers)
    ctl = Controller(model, None, build_method(spec), planned)
    for step in range(1, steps + 1):
        g = grads(step)
        for c in ctl.components:
            for p in c.params:
                p.grad = torch.full_like(p, g[c.layer]) if p.requires_grad else None
        ctl.before_optimizer_step(step)
        ctl.after_optimizer_step(step)
        if ctl.should_stop:
            break
    return ctl


def _frozen_layers_at(ctl):
    out = {}
    for e in ctl.events:
        out.setdefault(e.step, set()).add(e.layer)
    return out


# -------------------------------------------------------------------- registry
def test_registry_has_the_new_methods():
    for name in ("grades-v1", "grades-weight", "autofreeze", "freezeout", "bottom-k", "grades-official"):
        assert name in REGISTRY


@pytest.mark.parametrize("spec,field", [
    ({"name": "autofreeze", "eval_every": 0}, "eval_every"),
    ({"name": "autofreeze", "threshold": 150}, "threshold"),
    ({"name": "autofreeze", "threshold_mode": "percentil"}, "threshold_mode"),
    ({"name": "autofreeze", "max_frozen_ratio": 0}, "max_frozen_ratio"),
    ({"name": "autofreeze", "alpha": 1.0}, "alpha"),
    ({"name": "autofreeze", "accumulate": "yes"}, "accumulate"),
    ({"name": "autofreeze", "evl_every": 5}, "evl_every"),
    ({"name": "freezeout", "t0": 1.5}, "t0"),
    ({"name": "freezeout", "scale": "cubc"}, "cubic"),
    ({"name": "bottom-k"}, "k"),
    ({"name": "bottom-k", "k": 1, "fraction": 0.5}, "fraction"),
    ({"name": "bottom-k", "k": -1}, "k"),
    ({"name": "bottom-k", "fraction": 2}, "fraction"),
    ({"name": "grades-official", "tau": 0}, "tau"),
    ({"name": "grades-official", "compute_interval": 0}, "compute_interval"),
    ({"name": "grades-v1", "tau": -1}, "tau"),
])
def test_bad_parameters_name_the_field(spec, field):
    with pytest.raises(ConfigError, match=field):
        build_method(spec)


# --------------------------------------------------------------------- aliases
@pytest.mark.parametrize("name,signal", [("grades", "grad_delta_l1"), ("grades-v1", "grad_l1"),
                                         ("grades-weight", "weight_delta_l1")])
def test_aliases_default_signal_and_override(name, signal):
    m = build_method({"name": name, "tau": 1.0})
    assert m.name == name and m.config.signal == signal
    m = build_method({"name": name, "tau": 1.0, "signal": "grad_delta_l1", "alpha": 0.1})
    assert m.config.signal == "grad_delta_l1" and m.config.alpha == 0.1


def test_grades_v1_measures_the_gradient_l1_norm():
    model = build_tiny("qwen3")
    ctl = Controller(model, None, build_method({"name": "grades-v1", "tau": 1e-9, "alpha": 0.0}), 10)
    x = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=x, labels=x).loss.backward()
    ctl.before_optimizer_step(1)
    (step, values), = ctl.method.signal_history()
    expected = torch.tensor([sum(float(p.grad.abs().sum()) for p in c.params) for c in ctl.components])
    assert step == 1 and torch.allclose(values.double(), expected.double(), rtol=1e-5)  # defined at step 1


def test_grades_weight_measures_the_weight_change():
    ctl = _train({"name": "grades-weight", "tau": 1e-9, "alpha": 0.0}, steps=3)
    hist = ctl.method.signal_history()
    assert [s for s, _ in hist] == [1, 2, 3]
    assert torch.isnan(hist[0][1]).all() and torch.isfinite(hist[1][1]).all()
    assert ctl.events == []


# ------------------------------------------------------ parity with the release
@pytest.mark.parametrize("lora,tau", [(False, 1.5), (True, 0.15)])
def test_grades_weight_matches_released_grades_decisions(lora, tau):
    """Same model, seed, batches: grades-weight and the released grades==1.0.6 freeze the
    same matrices at the same steps. alpha * T = 6 is an integer (floor == ceil) and the
    first check (step k=2) is inside the grace period, where the released code's 0.0
    first value cannot freeze anything."""
    alpha, k, steps = 0.2, 2, 30
    ours = _train({"name": "grades-weight", "tau": tau, "alpha": alpha, "check_interval": k}, steps, lora=lora)
    peer = _train({"name": "grades-official", "tau": tau, "alpha": alpha, "compute_interval": k}, steps, lora=lora)
    a, b = _events(ours), _events(peer)
    n = len(ours.components)
    assert a, "the chosen tau must freeze something"
    assert len(a) < n, "... but not everything"
    assert sorted(a) == sorted(b)
    assert all(s >= 6 and s % k == 0 for s, _ in a)
    # the signals agree too (the released code's first value is 0.0, ours undefined)
    ha, hb = ours.method.signal_history(), peer.method.signal_history()
    assert [s for s, _ in ha] == [s for s, _ in hb] == list(range(k, steps + 1, k))
    assert torch.isnan(ha[0][1]).all() and (hb[0][1] == 0).all()
    for (_, va), (_, vb) in zip(ha[1:], hb[1:]):
        both = torch.isfinite(va) & torch.isfinite(vb)
        assert torch.equal(torch.isfinite(va), torch.isfinite(vb))
        assert torch.allclose(va[both].double(), vb[both].double(), rtol=1e-5)
        # no value so close to tau that float rounding could flip a decision
        assert ((va[both].double() - tau).abs() / tau > 1e-4).all()
    assert peer.method.summary()["tracked"] == n
    assert peer.method.summary()["mode"] == ("lora" if lora else "full")


def test_official_missing_folder_tells_the_install_command(tmp_path):
    from grades.methods.official import PeerMissingError, load_official

    with pytest.raises(PeerMissingError, match=r"pip install --no-deps --target .*grades==1\.0\.6"):
        load_official(tmp_path / "nowhere")


def test_official_loads_under_its_own_name():
    import sys

    from grades.methods.official import MODULE_NAME, load_official

    mod = load_official()
    assert mod.__name__ == MODULE_NAME and hasattr(mod, "GradEarlyStoppingCallback")
    assert sys.modules["grades"].__file__.endswith("grades/__init__.py")
    assert "peers" not in sys.modules["grades"].__file__


# --------------------------------------------------------------- autofreeze
@pytest.mark.parametrize("ratio", [0.75, 1.0])
def test_autofreeze_value_mode_grows_a_prefix(ratio):
    # layer 0 steady from the start; layer 1 doubles between evaluations 1 and 2, then
    # steady; layer 2 steady — but it must wait for layer 1 (prefix rule)
    def grads(step):
        return [1.0, 1.0 if step <= 2 else 2.0, 1.0]

    spec = {"name": "autofreeze", "eval_every": 2, "threshold_mode": "value", "threshold": 0.1,
            "max_frozen_ratio": ratio}
    ctl = _synthetic(spec, 3, grads, steps=12)
    by_step = _frozen_layers_at(ctl)
    if ratio == 0.75:  # freezing layer 2 would freeze 100% > 75%
        assert by_step == {4: {0}, 6: {1}}
        assert not ctl.should_stop
    else:
        assert by_step == {4: {0}, 6: {1, 2}}
        assert ctl.stop_reason == "all components frozen" and ctl.stop_step == 6
    assert all(len(idx) == 7 for _, idx in layer_units(ctl.components))
    assert len(ctl.events) == 7 * sum(len(v) for v in by_step.values())
    # layer 2 had r = 0 < 0.1 at step 4 (recorded), yet stayed trainable
    hist = dict(ctl.method.signal_history())
    l2 = [i for i, c in enumerate(ctl.components) if c.layer == 2]
    assert float(hist[4][l2[0]]) == 0.0


@pytest.mark.parametrize("changes,expected", [
    ([0.0, 0.05, 0.5, 1.0], {0, 1}),  # median 0.275: layers 0 and 1 below, a prefix
    ([0.5, 0.0, 0.0, 1.0], set()),  # layers 1, 2 below the median 0.25, but layer 0 is not
])
def test_autofreeze_percentile_mode(changes, expected):
    def grads(step):
        return [1.0] * 4 if step <= 2 else [1.0 + r for r in changes]

    ctl = _synthetic({"name": "autofreeze", "eval_every": 2}, 4, grads, steps=4)
    assert {e.layer for e in ctl.events} == expected
    if expected:
        assert {e.step for e in ctl.events} == {4}
        e = ctl.events[0]
        assert e.tau == pytest.approx(0.275, rel=1e-5) and e.signal == pytest.approx(0.0, abs=1e-6)


def test_autofreeze_grace_and_accumulate():
    def grads(step):
        return [1.0, 1.0 if step <= 2 else 2.0]

    spec = {"name": "autofreeze", "eval_every": 2, "threshold_mode": "value", "threshold": 0.1, "alpha": 0.1}
    ctl = _synthetic(spec, 2, grads, steps=12, planned=100)  # grace: step 10
    assert {e.step for e in ctl.events} == {10} and {e.layer for e in ctl.events} == {0}

    # layer 1: 3, 1, 2, 2, ... — evaluation steps alone see 1 -> 2 (r = 1), interval sums
    # see 3+1 -> 2+2 (r = 0)
    def grads2(step):
        return [1.0, {1: 3.0, 2: 1.0}.get(step, 2.0)]

    spec = {**spec, "alpha": 0.0, "max_frozen_ratio": 1.0}
    assert _frozen_layers_at(_synthetic(spec, 2, grads2, steps=4)) == {4: {0}}
    ctl = _synthetic({**spec, "accumulate": True}, 2, grads2, steps=4)
    assert _frozen_layers_at(ctl) == {4: {0, 1}} and ctl.stop_reason == "all components frozen"


def test_autofreeze_on_real_gradients_freezes_layer0_first_and_resumes():
    spec = {"name": "autofreeze", "eval_every": 2, "threshold_mode": "value", "threshold": 10.0}
    ctl = _train(spec, steps=8)
    assert {(e.step, e.layer) for e in ctl.events} == {(4, 0)}  # layer 1 would exceed 75%
    state = ctl.method.state_dict()
    m = build_method(spec)
    m.bind(ctl.method.ctx)
    m.load_state_dict(state)
    assert torch.equal(m.prev, ctl.method.prev) and m.evals == ctl.method.evals == 4


# ---------------------------------------------------------------- freezeout
@pytest.mark.parametrize("scale,t0,expected", [
    # f_i = s(t0 + (1 - t0) * i / 3), freeze after step ceil(f_i * 30); the top layer never
    ("linear", 0.5, {15: 0, 20: 1, 25: 2}),  # 0.5, 0.667, 0.833, 1
    ("cubic", 0.5, {4: 0, 9: 1, 18: 2}),  # 0.125, 0.296, 0.579, 1
])
def test_freezeout_freezes_each_layer_at_its_scheduled_step(scale, t0, expected):
    model = build_tiny("qwen3", num_hidden_layers=4)
    ctl = Controller(model, None, build_method({"name": "freezeout", "t0": t0, "scale": scale}), 30)
    for step in range(1, 31):
        ctl.before_optimizer_step(step)
        ctl.after_optimizer_step(step)
        frozen_layers = {c.layer for c, f in zip(ctl.components, ctl.freezer.frozen) if f}
        assert frozen_layers == {layer for s, layer in expected.items() if s <= step}, step
    assert {(e.step, e.layer) for e in ctl.events} == set(expected.items())
    assert len(ctl.events) == 7 * 3 and not ctl.should_stop
    sched = ctl.method.summary()["schedule"]
    assert [s["freeze_after_step"] for s in sched] == [*sorted(expected), None]


def test_freezeout_defaults_and_state():
    m = build_method("freezeout")
    assert (m.t0, m.scale) == (0.5, "linear")
    assert m.fractions(1, 0.5, "linear") == [1.0]
    m.load_state_dict({"done": [0, 2]})
    assert m.state_dict() == {"done": [0, 2]}


# ------------------------------------------------------------------ bottom-k
@pytest.mark.parametrize("spec,layers,k", [({"k": 2}, 3, 2), ({"fraction": 0.5}, 4, 2), ({"k": 0}, 2, 0)])
def test_bottom_k_freezes_the_lowest_k_layers_at_step_1(spec, layers, k):
    model = build_tiny("qwen3", num_hidden_layers=layers)
    ctl = Controller(model, None, build_method({"name": "bottom-k", **spec}), 10)
    ctl.before_optimizer_step(1)
    expected = {c.name for c in ctl.components if c.layer < k}
    assert {e.component for e in ctl.events} == expected
    assert all(e.step == 1 for e in ctl.events)
    for c in ctl.components:
        assert all(p.requires_grad == (c.layer >= k) for p in c.params)
    for step in range(2, 6):
        ctl.before_optimizer_step(step)
        ctl.after_optimizer_step(step)
    assert len(ctl.events) == len(expected) and not ctl.should_stop


def test_bottom_k_all_layers_stops_and_too_many_is_an_error():
    ctl = Controller(build_tiny("qwen3"), None, build_method({"name": "bottom-k", "k": 2}), 10)
    assert ctl.before_optimizer_step(1) and ctl.stop_reason == "all components frozen"
    with pytest.raises(ConfigError, match="k = 3"):
        Controller(build_tiny("qwen3"), None, build_method({"name": "bottom-k", "k": 3}), 10)


# ----------------------------------------------- a user's method, end to end
def test_toy_method_runs_through_train_run(tmp_path):
    import toy_method  # noqa: F401  (registers "toy")
    from tinymodels import prepare_tiny
    from grades.train import load_run_config, run

    _, model_dir, data_dir = prepare_tiny(tmp_path, data={"n_train": 16, "n_validation": 4, "n_test": 4,
                                                         "n_names": 20})
    cfg = load_run_config({
        "name": "toy", "model": {"source": f"local:{model_dir}"}, "data": {"source": f"jsonl:{data_dir}"},
        "method": {"name": "toy", "freeze_step": 2, "stop_step": 3}, "steps": 6, "batch_size": 4,
        "seq_len": 128, "save_model": False, "optim": {"lr": 1e-3},
    })
    rec = run(cfg, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "freeze_events.csv").open()))
    assert len(rows) == 1 and rows[0]["step"] == "2" and rows[0]["component"] == "model.layers.0.self_attn.q_proj"
    assert float(rows[0]["signal"]) == 0.5 and float(rows[0]["tau"]) == 1.0
    saved = json.loads((tmp_path / "run" / "train.json").read_text())
    for r in (rec, saved):
        assert r["method"] == "toy" and r["stop_reason"] == "toy stop" and r["steps_run"] == 3
        assert r["early_stopped"] and r["grades"]["first_freeze_step"] == 2 and r["grades"]["frozen"] == 1
        assert r["grades"]["calls"] == 3
    assert math.isclose(saved["frozen_ratio"], 1 / 14)


# ------------------------------------------------------------------- resume
def _same(a, b):
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and torch.allclose(a.cpu(), b.cpu(), rtol=0, atol=0,
                                                                            equal_nan=True)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


@pytest.mark.parametrize("spec", [
    {"name": "autofreeze", "eval_every": 2, "threshold_mode": "value", "threshold": 10.0, "accumulate": True},
    {"name": "freezeout", "t0": 0.2},
    {"name": "bottom-k", "k": 1},
    {"name": "grades-official", "tau": 1.5, "alpha": 0.2, "compute_interval": 2},
])
def test_state_dict_round_trip_through_a_fresh_controller(spec):
    ctl = _train(spec, steps=9, stop=False)
    assert ctl.events, "the run should have frozen something"
    state = ctl.state_dict()
    fresh = Controller(build_tiny("qwen3"), None, build_method(spec), 9)  # what a resume does
    fresh.load_state_dict(state)
    assert fresh.freezer.frozen == ctl.freezer.frozen
    assert _same(fresh.method.state_dict(), ctl.method.state_dict())
