"""Report figures from synthetic run directories (no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from grades import rundir
from grades.report import figures as F
from grades.report import freeze_figures as FF
from grades.report import plotting
from grades.report import signal_figures as SF
from grades.report.__main__ import main as report_main

TYPES = [("attn", "q"), ("attn", "k"), ("attn", "v"), ("attn", "o"), ("mlp", "gate"), ("mlp", "up"), ("mlp", "down")]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synth_signal(step: int, layer: int, t: str) -> float:
    """Decaying signal; attention decays faster, MLP starts higher, layer 0 stays high."""
    base = {"q": 8.0, "k": 6.0, "v": 6.0, "o": 9.0, "gate": 20.0, "up": 24.0, "down": 30.0}[t]
    rate = 0.12 if t in ("q", "k", "v", "o") else 0.06
    floor = 5.0 if layer == 0 else 0.0
    return base * math.exp(-rate * step) * (1 + 0.1 * layer) + floor


def write_run(root, model, slug, *, name, mode, method, tau=1.0, alpha=0.25, steps=40, layers=4,
              signals=True, status="ok", tau_in_train=None, seed=0):
    """A run directory as grades.train leaves it; GradES runs follow the GradES rule."""
    d = root / model / slug / f"seed{seed}"
    d.mkdir(parents=True)
    grace = max(1, math.ceil(alpha * steps))
    method_cfg = {"name": "grades", "tau": tau, "alpha": alpha} if method == "grades" else "none"
    (d / "run.yaml").write_text(yaml.safe_dump({"name": name, "mode": mode, "steps": steps, "method": method_cfg}))
    sig_rows, ev_rows = [], []
    prefix = "base_model.model.model" if mode == "lora" else "model"
    if method == "grades":
        frozen = {}
        for step in range(1, steps + 1):
            for layer in range(layers):
                for kind, t in TYPES:
                    comp = f"{prefix}.layers.{layer}.{'self_attn' if kind == 'attn' else 'mlp'}.{t}_proj"
                    if comp in frozen:
                        v = math.nan
                    else:
                        v = math.nan if step == 1 else synth_signal(step, layer, t)
                        if step >= grace and v < tau:
                            frozen[comp] = step
                            ev_rows.append([step, comp, layer, kind, t, "language", 4096, v, tau, "converged"])
                    sig_rows.append([step, comp, layer, kind, t, "language", v])
    sig = pd.DataFrame(sig_rows if signals else [], columns=rundir.SIGNAL_COLUMNS)
    sig.to_csv(d / "signals.csv", index=False)
    pd.DataFrame(ev_rows, columns=rundir.EVENT_COLUMNS).to_csv(d / "freeze_events.csv", index=False)
    n_comp = layers * len(TYPES)
    grades = None
    if method == "grades":
        grades = {"components": n_comp, "grace_steps": grace, "frozen": len(ev_rows)}
        if tau_in_train is not None:
            grades["config"] = {"tau": tau_in_train, "alpha": alpha}
    train = {"status": status, "name": name, "mode": mode, "method": method, "steps_planned": steps,
             "steps_run": steps, "frozen_ratio": len(ev_rows) / n_comp, "grades": grades}
    (d / "train.json").write_text(json.dumps(train))
    return d, ev_rows, n_comp


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "synth"
    info = {}
    info["fp_grades"] = write_run(root, "model-a", "fp-grades", name="FP+GradES", mode="fp", method="grades",
                                  tau=1.0, alpha=0.25, steps=40, layers=4)
    info["fp"] = write_run(root, "model-a", "fp", name="FP", mode="fp", method="none", signals=False)
    info["lora_grades"] = write_run(root, "model-b", "lora-grades", name="LoRA+GradES", mode="lora",
                                    method="grades", tau=2.0, alpha=0.2, steps=50, layers=6)
    # a second seed of the same setting: only the lowest seed is drawn
    write_run(root, "model-a", "fp-grades", name="FP+GradES", mode="fp", method="grades", tau=1.0, seed=1)
    # failed and unfinished runs must be skipped, not crash
    write_run(root, "model-b", "fp-grades", name="FP+GradES", mode="fp", method="grades", status="failed")
    (root / "model-b" / "fp" / "seed0").mkdir(parents=True)
    return root, info


def test_synthetic_runs_freeze_some_but_not_all(runs_dir):
    _, info = runs_dir
    for key in ("fp_grades", "lora_grades"):
        _, events, n = info[key]
        assert 0 < len(events) < n  # layer 0 never freezes, so some cells read "never"


@pytest.fixture(scope="module")
def written(runs_dir, tmp_path_factory):
    """write_figures run once for the module (drawing is the slow part)."""
    import contextlib
    import io

    root, _ = runs_dir
    out = tmp_path_factory.mktemp("figs")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        paths = F.write_figures(root, out)
    return out, paths, err.getvalue()


def test_write_figures_writes_valid_png_and_pdf(written):
    out, paths, err = written
    assert sorted(paths) == sorted(f"{n}.{e}" for n in F.FIGURES for e in plotting.FORMATS)
    for key, p in paths.items():
        assert p.exists() and p.parent == out
        data = p.read_bytes()
        if key.endswith(".png"):
            assert data[:8] == PNG_MAGIC
            assert len(data) > 10_000
        else:
            assert data[:5] == b"%PDF-"
            assert len(data) > 5_000
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert "status 'failed'" in err and "no train.json" in err


def test_find_runs_skips_failed_and_keeps_lowest_seed(runs_dir):
    root, _ = runs_dir
    runs = rundir.find_runs(root)
    assert [(r.model, r.setting, r.seed) for r in runs] == [
        ("model-a", "FP", 0), ("model-a", "FP+GradES", 0), ("model-b", "LoRA+GradES", 0)]
    assert [r.setting for r in F.grades_runs(runs, need_signals=True)] == ["FP+GradES", "LoRA+GradES"]


def test_layer_signal_data_selects_requested_layer_and_tau_from_run_yaml(runs_dir):
    _, info = runs_dir
    d = SF.layer_signal_data(info["fp_grades"][0], layer=1)
    sig = d["signals"]
    assert d["layer"] == 1 and set(sig["layer"]) == {1}
    assert len(sig) == 40 * len(TYPES)
    assert d["types"] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert d["tau"] == 1.0 and d["alpha"] == 0.25 and d["grace_step"] == 10
    row = sig[(sig["type"] == "up") & (sig["step"] == 5)]
    assert row["value"].iloc[0] == pytest.approx(synth_signal(5, 1, "up"), rel=1e-6)
    assert set(d["events"]["step"]) <= set(range(10, 41)) and len(d["events"]) > 0
    # the default is the middle layer: 4 layers -> 2, 6 layers -> 3; the tau is the run's own
    assert SF.layer_signal_data(info["fp_grades"][0])["layer"] == 2
    lora = SF.layer_signal_data(info["lora_grades"][0])
    assert lora["layer"] == 3 and lora["tau"] == 2.0
    # a layer the model does not have: no data (and no crash)
    assert SF.layer_signal_data(info["fp_grades"][0], layer=5) is None


def test_tau_prefers_run_yaml_then_train_json(tmp_path):
    d, _, _ = write_run(tmp_path, "m", "fp-grades", name="FP+GradES", mode="fp", method="grades", tau=0.5,
                        tau_in_train=0.7)
    assert rundir.load_run(d).tau_for("language") == 0.5
    (d / "run.yaml").unlink()
    assert rundir.load_run(d).tau_for("language") == 0.7


def test_frozen_fraction_curve_monotone_and_ends_at_events_over_components(runs_dir):
    _, info = runs_dir
    d, events, n = info["fp_grades"]
    run = rundir.load_run(d)
    curve = FF.frozen_fraction_curve(run.events, run.n_components, run.steps_run)
    assert run.n_components == n == 28
    assert curve["fraction"].is_monotonic_increasing and curve["step"].is_monotonic_increasing
    assert curve.iloc[0].tolist()[:2] == [0, 0]
    assert curve["step"].iloc[-1] == 40
    assert curve["fraction"].iloc[-1] == pytest.approx(len(events) / n)
    # nothing freezes before the grace period ends
    assert curve.loc[curve["step"] < run.grace_step, "fraction"].max() == 0


def test_frozen_fraction_curve_counts_events_per_step():
    ev = pd.DataFrame({"step": [5, 5, 9, 12]})
    c = FF.frozen_fraction_curve(ev, 8, 20)
    assert c["step"].tolist() == [0, 5, 9, 12, 20]
    assert c["frozen"].tolist() == [0, 2, 3, 4, 4]
    assert c["fraction"].iloc[-1] == 0.5
    empty = FF.frozen_fraction_curve(pd.DataFrame({"step": []}), 8, 20)
    assert empty["fraction"].tolist() == [0.0, 0.0]


def test_freeze_step_grid_marks_never_frozen(runs_dir):
    _, info = runs_dir
    run = rundir.load_run(info["fp_grades"][0])
    step, tracked = FF.freeze_step_grid(run.signals, run.events)
    assert list(step.columns) == ["q", "k", "v", "o", "gate", "up", "down"]
    assert list(step.index) == [0, 1, 2, 3] and tracked.to_numpy().all()
    assert step.loc[0].isna().all()  # layer 0's signal never drops below tau
    ev = run.events.set_index(["layer", "type"])["step"]
    for (layer, t), s in ev.items():
        assert step.loc[layer, t] == s
    assert int(np.isfinite(step.to_numpy()).sum()) == len(run.events)


def test_mean_signal_by_type_averages_layers_still_training(runs_dir):
    _, info = runs_dir
    run = rundir.load_run(info["fp_grades"][0])
    table = SF.mean_signal_by_type(run.signals)
    assert list(table.columns) == ["q", "k", "v", "o", "gate", "up", "down"]
    expected = np.mean([synth_signal(3, layer, "gate") for layer in range(4)])
    assert table.loc[3, "gate"] == pytest.approx(expected, rel=1e-6)
    assert 1 not in table.index  # step 1 has no defined signal


def test_figures_contain_one_panel_or_line_per_grades_run(runs_dir):
    root, _ = runs_dir
    runs = rundir.find_runs(root)
    gs = F.grades_runs(runs, need_signals=True)
    fig3 = FF.fig3_frozen_fraction(F.grades_runs(runs))
    labels = fig3.axes[0].get_legend_handles_labels()[1]
    assert any(lab.startswith("model-a / FP+GradES") for lab in labels)
    assert any(lab.startswith("model-b / LoRA+GradES") for lab in labels)
    # planned steps differ (40 vs 50): the x axis is normalised and says so
    assert "fraction of planned training" in fig3.axes[0].get_xlabel()
    fig1 = SF.fig1_layer_signals(gs, layer=1)
    titles = [ax.get_title() for ax in fig1.axes if ax.get_title()]
    assert len(titles) == 2 and all("layer 1" in t for t in titles)
    tau_lines = [ln for ax in fig1.axes for ln in ax.get_lines() if ln.get_label().startswith("τ")]
    assert sorted(ln.get_ydata()[0] for ln in tau_lines) == [1.0, 2.0]
    # fig4 draws one model per panel
    fig4 = SF.fig4_signal_by_kind(gs)
    assert sorted(ax.get_title().split("\n")[0] for ax in fig4.axes if ax.get_title()) == [
        "model-a / FP+GradES (4 layers)", "model-b / LoRA+GradES (6 layers)"]


def test_runs_without_signals_are_skipped(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "m", "fp", name="FP", mode="fp", method="none", signals=False)
    out = tmp_path / "figs"
    out.mkdir()
    (out / "fig1_layer_signals.png").write_bytes(b"stale")
    assert F.write_figures(root, out) == {}
    assert not (out / "fig1_layer_signals.png").exists()
    assert "skipping fig1_layer_signals" in capsys.readouterr().err
    # a GradES run that recorded no signals still gives the frozen-fraction figure
    write_run(root, "m", "fp-grades", name="FP+GradES", mode="fp", method="grades", signals=False)
    paths = F.write_figures(root, out)
    assert sorted(paths) == ["fig3_frozen_fraction.pdf", "fig3_frozen_fraction.png"]
    assert "no signals" in capsys.readouterr().err


def test_empty_runs_dir_writes_nothing(tmp_path):
    assert F.write_figures(tmp_path / "nothing", tmp_path / "figs") == {}


def test_cli_passes_arguments_and_prints_paths(monkeypatch, tmp_path, capsys):
    calls = []

    def fake(runs, out, layer=None):
        calls.append((runs, out, layer))
        return {"fig3_frozen_fraction.png": tmp_path / "fig3_frozen_fraction.png"}

    monkeypatch.setattr(F, "write_figures", fake)
    assert report_main(["figures", "--runs", "R", "--out", "O", "--layer", "5"]) == 0
    assert report_main(["figures", "--runs", "R", "--out", "O"]) == 0
    assert calls == [("R", "O", 5), ("R", "O", None)]
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"fig3_frozen_fraction.png: {tmp_path / 'fig3_frozen_fraction.png'}"


def test_requested_layer_missing_in_one_model_still_draws_the_other(runs_dir):
    root, _ = runs_dir
    gs = F.grades_runs(rundir.find_runs(root), need_signals=True)
    fig1 = SF.fig1_layer_signals(gs, layer=5)  # only model-b (6 layers) has a layer 5
    titles = [ax.get_title() for ax in fig1.axes if ax.get_title()]
    assert titles == ["model-b / LoRA+GradES: layer 5\nsignal " + plotting.signal_tex(gs[1])]
    assert SF.fig1_layer_signals(gs, layer=9) is None


def test_figure_type_order_is_the_components_order():
    """The report keeps its own copy (no torch import); it must not drift from the library's."""
    from grades.components import TYPE_ORDER
    from grades.report import plotting

    assert plotting.TYPE_ORDER == TYPE_ORDER
    assert len(set(plotting.TYPE_COLOURS.values())) == len(TYPE_ORDER)
