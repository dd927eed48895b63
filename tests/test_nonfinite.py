"""No freeze on a non-finite gradient, whatever the estimator: a NaN or Inf outside the
sampled estimator's subset still reaches the signal (SignalTracker, the Controller, and
GradESCallback inside a real transformers Trainer)."""

from __future__ import annotations

import math

import pytest
import torch
from tinymodels import batch, build_tiny
from transformers import Trainer, TrainerCallback, TrainingArguments

from grades import GradESCallback, GradESConfig
from grades.components import discover_components
from grades.controller import Controller
from grades.methods.grades import GradES
from grades.signals import SignalTracker, finite_probe

FRACTION = 0.01
VICTIM = 2  # component index poisoned: model.layers.0.self_attn.v_proj


def _backward(model, seed):
    model.zero_grad(set_to_none=True)
    model(**batch(seed=seed)).loss.backward()


def outside(tracker: SignalTracker, comp: int) -> int:
    """A flat index of the component's first parameter that the sampled estimator never reads."""
    j = next(j for j, o in enumerate(tracker._owner_list) if o == comp)
    idx = tracker._index[j]
    assert idx is not None, "the parameter is not sampled"
    taken = set(idx.tolist())
    return next(i for i in range(tracker.params[j].numel()) if i not in taken)


def poison(param: torch.nn.Parameter, flat: int, value: float, weight: bool = False) -> None:
    with torch.no_grad():
        (param if weight else param.grad).view(-1)[flat] = value


def test_finite_probe():
    ts = [torch.ones(3, dtype=torch.float16) * 60000, torch.tensor([1.0, math.nan]), torch.tensor([math.inf, 1.0]),
          torch.tensor([math.inf, -math.inf])]
    got = finite_probe(ts)
    assert torch.isfinite(got).tolist() == [True, False, False, False]  # no fp16 overflow: summed in float32
    assert torch.isfinite(finite_probe(ts, kernel="foreach")).tolist() == [True, False, False, False]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_sampled_delta_sees_a_nan_outside_its_sample(value):
    model = build_tiny("qwen3")
    comps = discover_components(model)
    full = SignalTracker(comps, "grad_delta_l1")
    sampled = SignalTracker(comps, "grad_delta_l1", sample_fraction=FRACTION)
    flat = outside(sampled, VICTIM)
    _backward(model, 0)
    full.measure()
    sampled.measure()
    _backward(model, 1)
    poison(comps[VICTIM].params[0], flat, value)
    for tracker in (full, sampled):
        got = tracker.measure()
        assert not math.isfinite(got[VICTIM])
        assert torch.isfinite(torch.cat([got[:VICTIM], got[VICTIM + 1:]])).all()
    # the stored gradient held it: the next delta is undefined too (as with the full estimator), then finite
    for seed, ok in ((2, False), (3, True)):
        _backward(model, seed)
        for tracker in (full, sampled):
            assert math.isfinite(tracker.measure()[VICTIM]) == ok


def test_sampled_delta_with_check_interval_sees_a_nan_in_the_recorded_gradient():
    model = build_tiny("qwen3")
    comps = discover_components(model)
    tracker = SignalTracker(comps, "grad_delta_l1", sample_fraction=FRACTION)
    flat = outside(tracker, VICTIM)
    _backward(model, 0)
    poison(comps[VICTIM].params[0], flat, math.nan)
    tracker.record()  # G_{t-1}, with a NaN outside the sample
    _backward(model, 1)
    got = tracker.measure(update_buffer=False)
    assert math.isnan(got[VICTIM]) and torch.isfinite(got[:VICTIM]).all()


def test_sampled_weight_delta_sees_a_nan_weight_outside_its_sample():
    model = build_tiny("qwen3")
    comps = discover_components(model)
    tracker = SignalTracker(comps, "weight_delta_l1", sample_fraction=FRACTION)
    tracker.measure()
    poison(comps[VICTIM].params[0], outside(tracker, VICTIM), math.nan, weight=True)
    got = tracker.measure()
    assert math.isnan(got[VICTIM]) and torch.isfinite(got[VICTIM + 1:]).all()


def test_controller_does_not_freeze_on_a_nan_outside_the_sample():
    model = build_tiny("qwen3")
    cfg = GradESConfig(tau=1e12, alpha=0.0, sample_fraction=FRACTION)  # every finite signal converges
    ctl = Controller(model, None, GradES(cfg), 10)
    flat = outside(ctl.method.tracker, VICTIM)
    for step in (1, 2, 3, 4):
        _backward(model, step)
        if step == 2:
            poison(ctl.components[VICTIM].params[0], flat, math.nan)
        ctl.before_optimizer_step(step)
    at = {e.component: e.step for e in ctl.events}
    victim = ctl.components[VICTIM].name
    assert all(s == 2 for c, s in at.items() if c != victim)  # the first defined delta
    assert at[victim] == 4  # not at 2 (its gradient held the NaN), nor 3 (the delta against it)


class _Inject(TrainerCallback):
    """Puts a NaN into one gradient entry the sampled estimator does not read, just
    before GradESCallback reads the gradients (callbacks run in list order)."""

    def __init__(self, grades_cb: GradESCallback, step: int) -> None:
        self.cb, self.step = grades_cb, step

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            ctl = self.cb.controller
            poison(ctl.components[VICTIM].params[0], outside(ctl.method.tracker, VICTIM), math.nan)


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=32, seq=16, vocab=128):
        self.x = torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def test_trainer_callback_does_not_freeze_on_a_nan_outside_the_sample(tmp_path):
    model = build_tiny("qwen3")
    cb = GradESCallback(GradESConfig(tau=1e12, alpha=0.0, sample_fraction=FRACTION))
    # max_grad_norm=0: no clipping, which would otherwise smear the NaN over every gradient
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=3, per_device_train_batch_size=4,
                             learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                             use_cpu=True, disable_tqdm=True, max_grad_norm=0.0, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=_Data(), callbacks=[_Inject(cb, 2), cb])
    trainer.train()
    at = {e.component: e.step for e in cb.events}
    victim = cb.controller.components[VICTIM].name
    assert len(at) == len(cb.controller.components) - 1 and all(s == 2 for s in at.values())
    assert victim not in at and not cb.controller.should_stop
    assert cb.summary()["coverage"]["share"] == 1.0
