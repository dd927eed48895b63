"""grades.bench: the JSON it writes (--quick), and the estimator-error / agreement arithmetic."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from grades import bench
from grades.components import discover_components
from grades.signals import SignalTracker
from tinymodels import batch, build_tiny


# ------------------------------------------------------------------ schema
def test_quick_run_writes_the_documented_files(tmp_path, capsys):
    root = tmp_path / "proj"
    tsv = root / "results" / "benchmarks" / "smoke" / "train" / "tiny" / "fp" / "seed0.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t300.0\n")
    out = tmp_path / "bench"
    assert bench.main(["--quick", "--threads", "1", "--out", str(out), "--workflow-root", str(root)]) == 0
    for name in ("overhead", "speedup", "memory", "workflows", "bench"):
        assert (out / f"{name}.json").is_file(), name
    text = (out / "summary.md").read_text()
    for head in ("## 1a.", "## 1b.", "## 1c.", "## 1d.", "## Targets"):
        assert head in text
    res = json.loads((out / "bench.json").read_text())
    meta = res["meta"]
    assert meta["schema_version"] == bench.SCHEMA_VERSION and meta["quick"] is True
    assert meta["threads"] == 1 and "loadavg_start" in meta and meta["elapsed_s"] > 0

    (o,) = res["overhead"]
    variants = {r["variant"]: r for r in o["variants"]}
    assert {"none", *bench.OURS} <= set(variants)
    for r in o["variants"]:
        for key in ("step_s", "hook_s", "overhead_direct", "overhead_ab", "state_bytes",
                    "state_bytes_per_tracked_param", "state_vs_weight_copy"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]), (r["variant"], key)
    assert variants["grad_delta_l1"]["state_vs_weight_copy"] == 1.0
    assert variants["grad_delta_l1+bf16"]["state_vs_weight_copy"] == 0.5
    assert variants["grad_l1"]["state_bytes"] == 0
    if bench.RELEASED in variants:  # the released package is an optional peer
        assert variants[bench.RELEASED]["state_vs_weight_copy"] == 1.0

    (s,) = res["speedup"]
    assert set(s["modes"]) == {"fp", "fp-frozen-emb", "lora"}
    for mode, m in s["modes"].items():
        rows = m["rows"]
        assert [(r["frozen_pct"], r["variant"]) for r in rows] == [
            (0, "plain"), (25, "plain"), (25, "savings"), (50, "plain"), (50, "savings"), (100, "plain"),
            (100, "savings")]
        for r in rows:
            assert r["predicted_speedup"] >= 1.0 - 1e-12 and r["realised_speedup"] > 0
            assert r["efficiency"] == r["realised_speedup"] / r["predicted_speedup"]
        full = {r["variant"]: r for r in rows if r["frozen_pct"] == 100}
        assert full["savings"]["pruned_params"] > 0
        if mode == "lora":
            assert full["savings"]["merged_modules"] == m["components"]
            assert full["savings"]["predicted_speedup"] > full["plain"]["predicted_speedup"]
        if mode == "fp-frozen-emb":
            assert full["savings"]["truncated_layers"] == 2
    opt_rows = s["modes"]["fp"]["optimizer_memory"]["rows"]
    assert [r["frozen_pct"] for r in opt_rows] == [0, 25, 50, 100]
    released = [r["released_bytes"] for r in opt_rows]
    assert released[0] == 0 and released == sorted(released) and released[-1] > 0
    assert all(r["released_bytes"] == r["released_counted"] for r in opt_rows)

    est = res["estimator"]
    for k in ("bf16", "sampled"):
        e = est["estimators"][k]
        assert e["relative_error"]["n"] > 0 and e["agreement"]["components"] == est["components"]
    assert res["workflows"]["smoke"]["run"] and res["workflows"]["smoke"]["sum_job_seconds"] == 12.5
    assert res["workflows"]["default"]["run"] is False
    assert res["verdicts"] and all({"target", "value", "met"} <= set(v) for v in res["verdicts"])
    mem = json.loads((out / "memory.json").read_text())["memory"]
    assert {"state", "optimizer", "estimator"} <= set(mem)
    # --update reruns some sections and keeps the others
    assert bench.main(["--quick", "--threads", "1", "--out", str(out), "--workflow-root", str(tmp_path),
                       "--sections", "workflows", "--update"]) == 0
    upd = json.loads((out / "bench.json").read_text())
    assert upd["overhead"] == res["overhead"] and upd["speedup"] == res["speedup"]
    assert upd["workflows"]["smoke"]["run"] is False
    assert upd["meta"]["updated_from"]["sections_kept"] == ["estimator", "overhead", "speedup"]
    assert "rerun with --update" in (out / "summary.md").read_text()
    capsys.readouterr()
    assert bench.main(["--compact", str(out / "bench.json")]) == 0
    compact = capsys.readouterr().out
    for head in ("Monitoring overhead", "Realised speedup", "AdamW state", "Estimators", "End-to-end"):
        assert head in compact


# ------------------------------------------------------- estimator arithmetic
def test_relative_errors_skip_undefined_entries():
    exact = torch.tensor([[float("nan"), 2.0], [4.0, 0.0]])
    est = torch.tensor([[1.0, 2.5], [3.0, 1.0]])
    torch.testing.assert_close(bench.relative_errors(exact, est), torch.tensor([0.25, 0.25], dtype=torch.float64))
    stats = bench.error_stats(bench.relative_errors(exact, est))
    assert stats["n"] == 2 and stats["median"] == 0.25 and stats["max"] == 0.25
    assert bench.error_stats(torch.tensor([]))["median"] is None


def test_first_below_respects_grace_and_nan():
    v = torch.tensor([[0.1, 5.0, float("nan")],
                      [5.0, 0.5, float("nan")],
                      [0.2, 5.0, float("nan")]])
    assert bench.first_below(v, [1, 2, 3], tau=1.0, grace=2) == [3, 2, None]


def test_freeze_agreement_counts_checks_apart():
    steps = list(range(1, 11))
    exact = torch.full((10, 4), 9.0)
    est = exact.clone()
    exact[4:, 0] = 0.0  # freezes at step 5
    est[6:, 0] = 0.0  # two checks later: agrees
    exact[2:, 1] = 0.0  # step 3
    est[7:, 1] = 0.0  # five checks later: disagrees
    exact[5:, 2] = 0.0  # exact only
    a = bench.freeze_agreement(exact, est, steps, tau=1.0, grace=1, within=2)
    assert a == {"components": 4, "frozen_by_exact": 3, "frozen_by_estimate": 2, "frozen_by_both": 2,
                 "exact_only": 1, "estimate_only": 0, "max_check_difference": 5, "agree_within": 2,
                 "agreeing": 2, "all_agree": False}
    # with a check every 2 steps, 4 steps apart is 2 checks
    assert bench.freeze_agreement(exact[:, :1], est[:, :1], steps, 1.0, 1, check_interval=2)["all_agree"]


def test_sampled_estimator_error_is_small_and_indices_are_shared():
    torch.manual_seed(0)
    model = build_tiny("qwen3", hidden_size=128, intermediate_size=256)
    comps = discover_components(model)
    exact = SignalTracker(comps, "grad_delta_l1")
    sampled = SignalTracker(comps, "grad_delta_l1", sample_fraction=0.25)
    for seed in (0, 1):
        model.zero_grad(set_to_none=True)
        model(**batch(seed=seed)).loss.backward()
        e, s = exact.measure(), sampled.measure()
    err = bench.relative_errors(e, s)
    assert err.numel() == len(comps) and float(err.median()) < 0.1
    # same-size matrices share one index set; its bytes count once
    by_size = {}
    for p, idx in zip(sampled.params, sampled._index):
        by_size.setdefault(p.numel(), set()).add(id(idx))
    assert all(len(ids) == 1 for ids in by_size.values())
    values = sum(math.ceil(0.25 * p.numel()) * 4 for p in sampled.params)
    indices = sum(math.ceil(0.25 * n) * 4 for n in by_size)
    assert sampled.buffer_bytes() == values + indices


def test_l1_kernels_agree_with_a_hand_computation():
    from grades.signals import delta_l1_norms, l1_norms

    g = torch.Generator().manual_seed(0)
    cur = [torch.randn(70, 40, generator=g), torch.randn(333, generator=g), torch.randn(3, 3, generator=g)]
    buf = [torch.randn(c.shape, generator=g) for c in cur]
    want = torch.tensor([float((c - b).abs().sum(dtype=torch.float64)) for c, b in zip(cur, buf)],
                        dtype=torch.float64)
    want_l1 = torch.tensor([float(c.abs().sum(dtype=torch.float64)) for c in cur], dtype=torch.float64)
    # small slices: several slices per tensor, and partial ones
    for kernel, size in (("slices", 1000), ("foreach", 700)):
        kw = dict(kernel=kernel, slice_elements=size)
        b = [x.clone() for x in buf]
        torch.testing.assert_close(delta_l1_norms(cur, b, update=False, **kw), want, rtol=1e-6, atol=0)
        assert all(torch.equal(x, y) for x, y in zip(b, buf))
        torch.testing.assert_close(delta_l1_norms(cur, b, update=True, **kw), want, rtol=1e-6, atol=0)
        assert all(torch.equal(x, y) for x, y in zip(b, cur))
        torch.testing.assert_close(l1_norms(cur, **kw), want_l1, rtol=1e-6, atol=0)
        b16 = [x.to(torch.bfloat16) for x in buf]
        want16 = torch.tensor([float((c - x.double()).abs().sum()) for c, x in zip(cur, b16)], dtype=torch.float64)
        torch.testing.assert_close(delta_l1_norms(cur, b16, update=False, **kw), want16, rtol=1e-6, atol=0)


@pytest.mark.parametrize("warmup_all,warm", [(True, ["a", "b", "c"]), (False, ["a"])])
def test_interleave_warms_then_rotates_the_order(warmup_all, warm):
    calls = []

    def run_one(v, n):
        calls.append(v)
        return [{"step": 1.0, "fwd_bwd": 1.0, "hook": 0.0, "optimizer": 0.0}] * n

    times = bench.interleave(["a", "b", "c"], bench.Plan(rounds=2, warmup_rounds=1), run_one, warmup_all=warmup_all)
    assert calls == warm + ["a", "b", "c", "b", "c", "a"]
    assert {v: [t["round"] for t in ts] for v, ts in times.items()} == {"a": [0, 1], "b": [0, 1], "c": [0, 1]}


def test_overhead_times_only_the_chosen_variants():
    plan = replace(bench.QUICK, rounds=1, overhead_variants=("grad_delta_l1+sampled",))
    res = bench.bench_overhead(bench.ModelSpec("qwen3-quick", "qwen3", bench.QWEN3_QUICK), plan)
    assert [r["variant"] for r in res["variants"]] == ["none", "grad_delta_l1+sampled"]
