import math

import pytest
import torch

from grades.components import discover_components
from grades.signals import SignalTracker
from tinymodels import add_lora, batch, build_tiny


def _backward(model, seed):
    model.zero_grad(set_to_none=True)
    b = batch(seed=seed)
    model(**b).loss.backward()


def _by_hand(comps, fn):
    return torch.tensor([sum(float(fn(p)) for p in c.params) for c in comps], dtype=torch.float64)


def test_grad_l1_equals_hand_computation():
    model = build_tiny("qwen3")
    comps = discover_components(model)
    tr = SignalTracker(comps, "grad_l1")
    _backward(model, 0)
    got = tr.measure()
    want = _by_hand(comps, lambda p: p.grad.abs().sum(dtype=torch.float64))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("normalize", [False, True])
def test_grad_delta_first_is_nan_then_matches_hand(normalize):
    model = build_tiny("qwen3")
    comps = discover_components(model)
    tr = SignalTracker(comps, "grad_delta_l1", normalize=normalize)
    _backward(model, 0)
    prev = {id(p): p.grad.clone() for c in comps for p in c.params}
    first = tr.measure()
    assert torch.isnan(first).all(), "a delta has no value at its first measurement"
    _backward(model, 1)
    got = tr.measure()
    want = _by_hand(comps, lambda p: (p.grad - prev[id(p)]).abs().sum(dtype=torch.float64))
    if normalize:
        want = want / torch.tensor([c.numel for c in comps], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert (got > 0).all()


def test_weight_delta_matches_hand():
    model = build_tiny("qwen3")
    comps = discover_components(model)
    tr = SignalTracker(comps, "weight_delta_l1")
    before = {id(p): p.detach().clone() for c in comps for p in c.params}
    assert torch.isnan(tr.measure()).all()
    with torch.no_grad():
        for c in comps:
            for p in c.params:
                p.add_(0.01 * torch.randn_like(p))
    got = tr.measure()
    want = _by_hand(comps, lambda p: (p.detach() - before[id(p)]).abs().sum(dtype=torch.float64))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


def test_lora_signal_is_sum_of_a_and_b():
    model = add_lora(build_tiny("qwen3"), adapter_name="x")
    comps = discover_components(model)
    tr = SignalTracker(comps, "grad_l1")
    _backward(model, 0)
    got = tr.measure()
    c = comps[3]
    want = c.params[0].grad.abs().sum(dtype=torch.float64) + c.params[1].grad.abs().sum(dtype=torch.float64)
    assert math.isclose(float(got[3]), float(want), rel_tol=1e-5)


def test_inactive_components_are_skipped_and_nan_gradient_propagates():
    model = build_tiny("qwen3")
    comps = discover_components(model)
    tr = SignalTracker(comps, "grad_l1")
    _backward(model, 0)
    comps[2].params[0].grad[0, 0] = float("nan")
    active = [True] * len(comps)
    active[5] = False
    got = tr.measure(active)
    assert math.isnan(got[5]) and math.isnan(got[2])
    assert torch.isfinite(got[[0, 1, 3, 4, 6]]).all()


def test_low_precision_and_sampled_buffers():
    model = build_tiny("qwen3", hidden_size=128, intermediate_size=256)
    comps = discover_components(model)
    tracked_bytes = sum(c.numel for c in comps) * 4
    exact = SignalTracker(comps, "grad_delta_l1")
    half = SignalTracker(comps, "grad_delta_l1", buffer_dtype="bfloat16")
    sampled = SignalTracker(comps, "grad_delta_l1", sample_fraction=0.05, seed=1)
    _backward(model, 0)
    for t in (exact, half, sampled):
        t.measure()
    _backward(model, 1)
    e, h, s = exact.measure(), half.measure(), sampled.measure()
    assert half.buffer_bytes() == tracked_bytes // 2
    assert sampled.buffer_bytes() <= 0.11 * tracked_bytes  # 5% values (4 B) + 5% int32 indices
    torch.testing.assert_close(h, e, rtol=2e-2, atol=0)
    rel = ((s - e).abs() / e).max()
    assert rel < 0.35, f"sampled estimate off by {rel:.2f}"


@pytest.mark.parametrize("signal", ["grad_delta_l1", "grad_l1"])
def test_named_kernels_agree_with_auto(signal):
    model = build_tiny("qwen3")
    comps = discover_components(model)
    trackers = {k: SignalTracker(comps, signal, kernel=k) for k in ("auto", "slices", "foreach")}
    for seed in (0, 1):
        _backward(model, seed)
        got = {k: t.measure() for k, t in trackers.items()}
    assert torch.equal(got["auto"], got["slices"])  # "auto" is "slices" on CPU
    torch.testing.assert_close(got["foreach"], got["auto"], rtol=1e-5, atol=0)  # float32 sums, other order
    with pytest.raises(ValueError, match="unknown L1 kernel"):
        SignalTracker(comps, signal, kernel="fast")
