"""The multimodal table and the VLM convergence figure, from synthetic run directories."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from grades.report import multimodal as M
from grades.report.__main__ import main as report_main
from grades.rundir import EVENT_COLUMNS, SIGNAL_COLUMNS, find_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
V_TYPES = [("attn", "q"), ("attn", "k"), ("attn", "v"), ("attn", "o"), ("mlp", "up"), ("mlp", "down")]
L_TYPES = [("attn", "q"), ("attn", "k"), ("attn", "v"), ("attn", "o"), ("mlp", "gate"), ("mlp", "up"), ("mlp", "down")]
LAYERS = 2


def write_vlm_run(root, slug, *, name, mode, method, steps=30, ltau=0.5, vtau=2.0, alpha=0.2, acc=0.45, seed=0,
                  by_type=None):
    d = root / "tiny-vlm" / slug / f"seed{seed}"
    d.mkdir(parents=True)
    grace = max(1, math.ceil(alpha * steps))
    sig, ev = [], []
    if method == "grades":
        frozen = set()
        for step in range(1, steps + 1):
            for tower, types, start, rate in (("vision", V_TYPES, 6.0, 0.15), ("language", L_TYPES, 3.0, 0.08)):
                tau = vtau if tower == "vision" else ltau
                for layer in range(LAYERS):
                    for kind, t in types:
                        comp = f"{tower}.{layer}.{t}"
                        v = math.nan if (comp in frozen or step == 1) else start * math.exp(-rate * step) * (1 + layer)
                        if step >= grace and v < tau:
                            frozen.add(comp)
                            ev.append([step, comp, layer, kind, t, tower, 100, v, tau, "converged"])
                        sig.append([step, comp, layer, kind, t, tower, v])
    pd.DataFrame(sig, columns=SIGNAL_COLUMNS).to_csv(d / "signals.csv", index=False)
    pd.DataFrame(ev, columns=EVENT_COLUMNS).to_csv(d / "freeze_events.csv", index=False)
    mcfg = {"name": "grades", "language_tau": ltau, "vision_tau": vtau, "alpha": alpha} if method == "grades" \
        else "none"
    (d / "run.yaml").write_text(yaml.safe_dump({"name": name, "mode": mode, "steps": steps, "method": mcfg}))
    train = {"status": "ok", "name": name, "mode": mode, "method": method, "steps_planned": steps, "steps_run": steps,
             "train_time_s": 12.5, "total_time_s": 12.5, "stop_reason": "max_steps", "modality": "vision-language",
             "components_by_tower": {"language": 7 * LAYERS, "vision": 6 * LAYERS},
             "flops": {"total": 1e12, "vision": 2e11, "images": 16 * steps},
             "grades": {"components": 13 * LAYERS, "grace_steps": grace} if method == "grades" else None}
    (d / "train.json").write_text(json.dumps(train))
    (d / "eval.json").write_text(json.dumps({"backend": "grades-vlm", "tasks": {"shapes_mc": {
        "acc": acc, "acc_stderr": 0.03, "n": 300, "n_choices": 4, "chance_acc": 0.25,
        "by_type": by_type or {"count": {"acc": 0.9}, "colour": {"acc": 0.25}}}}}))
    return d, ev


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mm") / "runs"
    info = {"fp-grades": write_vlm_run(root, "fp-grades", name="FP+GradES", mode="fp", method="grades", acc=0.48),
            "lora-grades": write_vlm_run(root, "lora-grades", name="LoRA+GradES", mode="lora", method="grades",
                                         ltau=0.3, vtau=1.0, acc=0.40)}
    write_vlm_run(root, "fp", name="FP", mode="fp", method="none", acc=0.50)
    write_vlm_run(root, "fp", name="FP", mode="fp", method="none", acc=0.46, seed=1)
    write_vlm_run(root, "lora", name="LoRA", mode="lora", method="none", acc=0.42)
    base = root / "tiny-vlm" / "base"
    base.mkdir()
    (base / "eval.json").write_text(json.dumps({"backend": "grades-vlm", "tasks": {"shapes_mc": {
        "acc": 0.24, "acc_stderr": 0.025, "n": 300, "n_choices": 4, "chance_acc": 0.25}}}))
    # a language-model run next to it stays out of the multimodal table
    lm = root / "tiny-qwen3" / "fp" / "seed0"
    lm.mkdir(parents=True)
    (lm / "train.json").write_text(json.dumps({"status": "ok", "name": "FP", "mode": "fp", "method": "none",
                                               "flops": {"total": 1.0}}))
    (root / "tiny-qwen3" / "base").mkdir()
    (root / "tiny-qwen3" / "base" / "eval.json").write_text(json.dumps({"backend": "hf", "tasks": {"w": {"acc": 0.3}}}))
    return root, info


def test_table_rows_accuracy_time_flops_and_frozen_per_tower(runs_dir, tmp_path):
    root, info = runs_dir
    table = M.multimodal_table(M.collect(root))
    assert list(table["setting"]) == ["Base", "FP", "FP+GradES", "LoRA", "LoRA+GradES"]
    assert set(table["model"]) == {"tiny-vlm"}
    t = table.set_index("setting")
    assert t.loc["FP", "acc"] == pytest.approx(48.0) and t.loc["FP", "seeds"] == 2  # mean of two seeds
    assert t.loc["FP", "acc_stderr"] == pytest.approx(100 * math.sqrt(2 * 0.03**2) / 2)
    assert t.loc["Base", "acc"] == pytest.approx(24.0) and t.loc["FP", "chance"] == pytest.approx(25.0)
    for slug, setting in (("fp-grades", "FP+GradES"), ("lora-grades", "LoRA+GradES")):
        ev = info[slug][1]
        assert t.loc[setting, "frozen_vision"] == sum(e[5] == "vision" for e in ev) > 0
        assert t.loc[setting, "frozen_language"] == sum(e[5] == "language" for e in ev) > 0
        assert t.loc[setting, "tracked_vision"] == 6 * LAYERS and t.loc[setting, "tracked_language"] == 7 * LAYERS
    assert t.loc["FP", "frozen_vision"] == 0 and t.loc["FP", "train_time_s"] == 12.5
    assert t.loc["FP", "flops_train"] == 1e12 and t.loc["FP", "flops_vision"] == 2e11
    assert t.loc["FP", "acc_count"] == pytest.approx(90.0)

    paths = M.write_multimodal(root, tmp_path / "tables", tmp_path / "figs")
    csv = pd.read_csv(paths["multimodal.csv"])
    assert len(csv) == 5 and {"acc", "acc_stderr", "train_time_s", "flops_train", "frozen_vision",
                              "frozen_language"} <= set(csv.columns)
    md = paths["multimodal.md"].read_text()
    fg = t.loc["FP+GradES"]
    assert f"{int(fg['frozen_vision'])}/{6 * LAYERS}" in md and "48.0 ± 2.1" in md
    assert md.count("\n| tiny-vlm |") == 10  # main table + per-type table
    assert "Chance level: 25.0%" in md


def test_convergence_figure_is_written_and_readable(runs_dir, tmp_path):
    root, _ = runs_dir
    paths = M.write_multimodal(root, tmp_path / "t", tmp_path / "f")
    png = paths["vlm_convergence.png"]
    assert png.read_bytes()[:8] == PNG_MAGIC and paths["vlm_convergence.pdf"].stat().st_size > 1000
    from matplotlib.image import imread

    img = imread(png)
    assert img.shape[0] > 800 and img.shape[1] > 1500  # two runs side by side, two rows
    fig = M.vlm_convergence(find_runs(root))
    top = fig.axes[0]
    dotted = [ln for ln in top.get_lines() if ln.get_linestyle() == ":"]
    assert sorted(round(ln.get_ydata()[0], 6) for ln in dotted) == [0.5, 2.0]  # language_tau, vision_tau
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert any(x.startswith("language_tau") for x in labels) and any(x.startswith("vision_tau") for x in labels)


def test_data_helpers():
    sig = pd.DataFrame([[2, "a", 0, "attn", "q", "vision", 4.0], [2, "b", 0, "attn", "q", "vision", float("nan")],
                        [2, "c", 0, "attn", "q", "language", 1.0], [3, "c", 0, "attn", "q", "language", 3.0]],
                       columns=SIGNAL_COLUMNS)
    m = M.tower_signal_means(sig)
    assert list(m.columns) == ["language", "vision"] and m.loc[2, "vision"] == 4.0 and m.loc[3, "language"] == 3.0
    ev = pd.DataFrame([[5, "a", 0, "attn", "q", "vision", 1, 0.1, 1.0, "converged"],
                       [7, "b", 0, "attn", "q", "vision", 1, 0.1, 1.0, "converged"]], columns=EVENT_COLUMNS)
    c = M.frozen_count_by_tower(ev, 10)
    assert list(c["vision"]["frozen"]) == [0, 1, 2, 2] and list(c["vision"]["step"]) == [0, 5, 7, 10]
    assert list(c["language"]["frozen"]) == [0, 0]


def test_no_vlm_runs_gives_a_note_and_a_placeholder(tmp_path):
    (tmp_path / "runs").mkdir()
    paths = M.write_multimodal(tmp_path / "runs", tmp_path / "t", tmp_path / "f")
    assert "no vision-language runs" in paths["multimodal.md"].read_text()
    assert paths["vlm_convergence.png"].exists()
    assert "vlm_convergence.png" not in M.write_multimodal(tmp_path / "runs", tmp_path / "t", tmp_path / "g",
                                                            placeholder=False)


def test_cli(runs_dir, tmp_path, capsys):
    root, _ = runs_dir
    assert report_main(["multimodal", "--runs", str(root), "--tables", str(tmp_path / "t"),
                        "--figures", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert "multimodal.md" in out and "vlm_convergence.png" in out


def test_benchmark_scores_reach_both_tables(tmp_path):
    """A paper-profile VLM run (no multiple-choice task; GQA / VQAv2 / COCO Caption through lm-eval):
    lm-eval's results -> eval.json entries (grades.vlm._task_entry) -> the multimodal table's
    benchmark block and the paper comparison (x100, the task's own metric)."""
    from grades import vlm
    from grades.report.paper import multimodal_comparison, multimodal_markdown
    from grades.report.runs import eval_rows

    root = tmp_path / "runs"
    scores = {"FP": (0.70, 0.80, 1.10), "FP+GradES": (0.72, 0.79, 1.05)}
    for (slug, name), seed in ((("fp", "FP"), 0), (("fp-grades", "FP+GradES"), 0)):
        d, _ = write_vlm_run(root, slug, name=name, mode="fp", method="grades" if "grades" in slug else "none")
        target = root / "qwen2.5-vl-7b" / slug / "seed0"
        target.parent.mkdir(parents=True, exist_ok=True)
        d.rename(target)
        g, v, c = scores[name]
        res = {"results": {"gqa": {"alias": "gqa", "exact_match,none": g, "exact_match_stderr,none": 0.01},
                           "vqav2": {"vqa_acc,none": v, "vqa_acc_stderr,none": 0.02},
                           "coco_caption": {"cider,none": c, "cider_stderr,none": "N/A"}},
               "configs": {"gqa": {"metric_list": [{"metric": "exact_match"}]},
                           "vqav2": {"metric_list": [{"metric": "vqa_acc"}]},
                           "coco_caption": {"metric_list": [{"metric": "cider"}]}},
               "n-samples": {t: {"original": 100, "effective": 100} for t in ("gqa", "vqav2", "coco_caption")},
               "versions": {t: 1.0 for t in ("gqa", "vqav2", "coco_caption")}}
        entries = {t: vlm.task_entry(t, res, "vllm-vlm") for t in ("gqa", "vqav2", "coco_caption")}
        assert entries["coco_caption"]["score"] == c and entries["coco_caption"]["score_stderr"] is None
        assert entries["vqav2"]["metric"] == "vqa_acc" and entries["gqa"]["n"] == 100
        (target / "eval.json").write_text(json.dumps({"backend": "grades-vlm", "tasks": entries}))
    table = M.multimodal_table(M.collect(root)).set_index("setting")
    assert table.loc["FP", "score_coco_caption"] == pytest.approx(110.0)
    assert table.loc["FP+GradES", "metric_vqav2"] == "vqa_acc" and pd.isna(table.loc["FP", "acc"])
    md = M.multimodal_markdown(M.multimodal_table(M.collect(root)))
    assert "| gqa (exact_match) | vqav2 (vqa_acc) | coco_caption (cider) |" in md
    assert "| qwen2.5-vl-7b | FP | 70.00 | 80.00 | 110.00 |" in md
    # the paper comparison: ours beside the paper's, per benchmark
    evals = pd.DataFrame([r for slug, name in (("fp", "FP"), ("fp-grades", "FP+GradES")) for r in eval_rows(
        json.loads((root / "qwen2.5-vl-7b" / slug / "seed0" / "eval.json").read_text()), "qwen2.5-vl-7b", name,
        "fp", "x", 0)])
    assert set(evals["metric"]) == {"exact_match", "vqa_acc", "cider"}
    mm = multimodal_comparison(evals, "results/paper", {"qwen2.5-vl-7b": "Qwen2.5-VL-7B"})
    got = mm.dropna(subset=["ours"]).set_index(["method", "benchmark"])["ours"].to_dict()
    assert got == pytest.approx({("FP", "gqa"): 70.0, ("FP", "vqav2"): 80.0, ("FP", "coco_caption"): 110.0,
                                 ("FP+GradES", "gqa"): 72.0, ("FP+GradES", "vqav2"): 79.0,
                                 ("FP+GradES", "coco_caption"): 105.0})
    assert "| FP | 70.00 / 75.69 (-5.69) | 80.00 / 81.00 (-1.00) | 110.00 / 41.38 (+68.62) |" in \
        multimodal_markdown(mm)
