"""grades.train on a tiny VLM: FP, LoRA with vision targets, GradES in both towers, ES, resume."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from grades.models import is_vlm_dir
from grades import vlm
from grades.data import prepare_dataset
from grades.models import prepare_model
from grades.train import load_run_config, run

SMALL_DATA = dict(n_train=32, n_validation=8, n_test=8, seed=0)
SMALL_VLM = dict(hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64, vision_hidden_size=16,
                 vision_intermediate_size=32, vocab_size=300)
N_VISION, N_LANGUAGE = 6 * 2, 7 * 2  # tracked matrices of the tiny Idefics3 (2 + 2 blocks)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return prepare_dataset("synthetic:shapes", tmp_path_factory.mktemp("vt") / "shapes", **SMALL_DATA)


@pytest.fixture(scope="module")
def model_dir(shapes_dir, tmp_path_factory):
    """The ``tiny-vlm:idefics3`` model source, as the workflow prepares it."""
    return prepare_model("tiny-vlm:idefics3", tmp_path_factory.mktemp("vt") / "model", data=str(shapes_dir),
                         **SMALL_VLM)


def cfg(model_dir, shapes_dir, **over):
    raw = {"name": "X", "model": {"source": f"local:{model_dir}"}, "data": {"source": f"jsonl:{shapes_dir}"},
           "steps": 6, "batch_size": 4, "threads": 1, "optim": {"lr": 1e-2}, "schedule": {"warmup_ratio": 0.0},
           "lora": {"r": 2, "alpha": 4, "targets": ["@language", "@vision"]}, **over}
    return load_run_config(raw)


def events(run_dir) -> list[dict]:
    return list(csv.DictReader((run_dir / "freeze_events.csv").read_text().splitlines()))


def test_model_source_builds_a_vlm(model_dir):
    assert is_vlm_dir(model_dir)
    info = json.loads((model_dir / "grades_model.json").read_text())
    assert info["source"] == "tiny-vlm:idefics3" and info["kind"] == "vlm" and info["image_seq_len"] == 4
    assert (model_dir / "processor_config.json").exists()


def test_fp_run_trains_counts_vision_flops_and_saves_processor(model_dir, shapes_dir, tmp_path):
    rec = run(cfg(model_dir, shapes_dir, mode="fp"), tmp_path / "fp", progress=False)
    assert rec["status"] == "ok" and rec["steps_run"] == 6
    assert rec["modality"] == "vision-language" and rec["lora_targets"] is None
    assert rec["components_by_tower"] == {"language": N_LANGUAGE, "vision": N_VISION}
    assert rec["n_train_examples"] == SMALL_DATA["n_train"]
    fl = rec["flops"]
    assert fl["images"] == 6 * 4 and fl["vision"] > 0
    assert fl["total"] == pytest.approx(sum(fl["by_kind"].values()))
    assert {"vision_attn", "vision_mlp", "vision_attention_scores", "vision_patch_embed", "projector"} <= set(
        fl["by_kind"])
    assert rec["loss_last"] < rec["loss_first"]
    saved = tmp_path / "fp" / "model"
    assert (saved / "processor_config.json").exists() and (saved / "tokenizer.json").exists()
    e = vlm.evaluate_vlm(saved, shapes_dir, batch_size=8, threads=1)  # loads with its saved processor
    assert e["tasks"]["shapes_mc"]["n"] == SMALL_DATA["n_test"]


def test_lora_with_vision_targets(model_dir, shapes_dir, tmp_path):
    rec = run(cfg(model_dir, shapes_dir, mode="lora"), tmp_path / "lora", progress=False)
    assert rec["status"] == "ok"
    targets = rec["lora_targets"]
    assert len(targets) == N_VISION + N_LANGUAGE
    assert sum(t.startswith("model.vision_model.") for t in targets) == N_VISION
    assert rec["grades"]["components"] == N_VISION + N_LANGUAGE  # the adapter pairs of both towers
    assert rec["trainable_params"] < rec["total_params"] / 5
    # frozen base below the vision adapters: no patch-embedding gradient, vision weight grads of A/B only
    assert rec["flops"]["by_kind_pass"]["vision_patch_embed"]["weight_grad"] == 0
    assert rec["flops"]["by_kind_pass"]["vision_attn"]["weight_grad"] > 0
    ada = tmp_path / "lora" / "adapter"
    assert (ada / "adapter_config.json").exists() and (ada / "processor_config.json").exists()
    saved = json.loads((ada / "adapter_config.json").read_text())["target_modules"]  # peft stores suffixes
    assert {"fc1", "fc2", "out_proj"} <= set(saved)  # the vision tower's own names
    e = vlm.evaluate_vlm(model_dir, shapes_dir, adapter=ada, limit=4, threads=1)
    assert e["adapter"] and e["tasks"]["shapes_mc"]["n"] == 4


def test_grades_freezes_vision_only_and_saves_its_backward_flops(model_dir, shapes_dir, tmp_path):
    """vision_tau huge, language_tau 0: every vision matrix freezes at the first defined
    check after the grace period, no language matrix ever; the vision weight-gradient
    FLOPs drop, the language ones do not."""
    base = run(cfg(model_dir, shapes_dir, mode="fp", steps=8), tmp_path / "fp", progress=False)
    method = {"name": "grades", "vision_tau": 1e9, "language_tau": 0.0, "alpha": 0.25}
    rec = run(cfg(model_dir, shapes_dir, mode="fp", steps=8, method=method), tmp_path / "g", progress=False)
    assert rec["steps_run"] == 8 and rec["grades"]["frozen"] == N_VISION  # the language tower trains on
    ev = events(tmp_path / "g")
    assert len(ev) == N_VISION and {r["tower"] for r in ev} == {"vision"} and {r["step"] for r in ev} == {"2"}
    assert {float(r["tau"]) for r in ev} == {1e9}
    sig = list(csv.DictReader((tmp_path / "g" / "signals.csv").read_text().splitlines()))
    assert {r["tower"] for r in sig} == {"language", "vision"}
    kp, kb = rec["flops"]["by_kind_pass"], base["flops"]["by_kind_pass"]
    assert kp["vision_attn"]["weight_grad"] < kb["vision_attn"]["weight_grad"] / 3
    assert kp["vision_mlp"]["weight_grad"] < kb["vision_mlp"]["weight_grad"] / 3
    assert kp["mlp"]["weight_grad"] == kb["mlp"]["weight_grad"]
    assert rec["flops"]["total"] < base["flops"]["total"]


@pytest.mark.parametrize("mode", ["fp", "lora"])
def test_grades_freezes_both_towers_with_their_own_taus(model_dir, shapes_dir, tmp_path, mode):
    method = {"name": "grades", "vision_tau": 1e9, "language_tau": 1e9, "alpha": 0.5}
    rec = run(cfg(model_dir, shapes_dir, mode=mode, method=method), tmp_path / mode, progress=False)
    ev = events(tmp_path / mode)
    assert {r["tower"] for r in ev} == {"language", "vision"}
    assert sum(r["tower"] == "vision" for r in ev) == N_VISION
    assert sum(r["tower"] == "language" for r in ev) == N_LANGUAGE
    assert rec["stop_reason"] == "all components frozen" and rec["steps_run"] == 3  # grace end: ceil(0.5 * 6)
    assert rec["grades"]["config"]["vision_tau"] == 1e9 and rec["grades"]["config"]["language_tau"] == 1e9


def test_validation_loss_early_stopping(model_dir, shapes_dir, tmp_path):
    method = {"name": "es", "eval_every": 2, "patience": 5}
    rec = run(cfg(model_dir, shapes_dir, mode="lora", val_batch_size=4, method=method), tmp_path / "es",
              progress=False)
    assert [s for s, _ in rec["validation_curve"]] == [2, 4, 6]
    assert rec["flops"]["validation"] > 0 and rec["validation_time_s"] > 0


def test_resume_after_failure_matches_an_uninterrupted_run(model_dir, shapes_dir, tmp_path, monkeypatch):
    method = {"name": "grades", "vision_tau": 1e9, "language_tau": 0.0, "alpha": 0.3}
    c = cfg(model_dir, shapes_dir, mode="lora", method=method, checkpoint_every=2)
    full = run(c, tmp_path / "full", progress=False)
    monkeypatch.setenv("GRADES_TEST_FAIL_AT_STEP", "3")
    with pytest.raises(RuntimeError, match="failure injected"):
        run(c, tmp_path / "cut", progress=False)
    monkeypatch.delenv("GRADES_TEST_FAIL_AT_STEP")
    rec = run(c, tmp_path / "cut", progress=False)
    assert rec["resumed_from_steps"] == [2]
    assert [round(x, 5) for _, x in rec["loss_curve"]] == [round(x, 5) for _, x in full["loss_curve"]]
    assert events(tmp_path / "cut") == events(tmp_path / "full")
    assert rec["flops"]["total"] == pytest.approx(full["flops"]["total"]) and rec["flops"]["images"] == 6 * 4


def test_text_models_are_unaffected(tmp_path):
    """A language model's train.json has no VLM fields and no vision FLOPs."""
    from grades.data import prepare_dataset as prep

    data = prep("synthetic:world-mc", tmp_path / "w", n_train=16, n_validation=4, n_test=4, seed=0)
    m = prepare_model("tiny:qwen3", tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                      head_dim=16, intermediate_size=64, vocab_size=300)
    rec = run(load_run_config({"model": {"source": f"local:{m}"}, "data": {"source": f"jsonl:{data}"},
                               "steps": 2, "batch_size": 4, "threads": 1}), tmp_path / "r", progress=False)
    assert "modality" not in rec and "vision" not in rec["flops"] and "images" not in rec["flops"]
    assert set(rec["flops"]["by_kind"]) == {"attn", "mlp", "attention_scores", "lm_head"}
    torch.set_num_threads(1)


def test_model_source_spec_and_options_are_checked():
    from grades.config import ConfigError
    from grades.models import check_options, parse_spec

    assert parse_spec("tiny-vlm:idefics3") == ("tiny-vlm", "idefics3")
    with pytest.raises(ConfigError, match="unknown tiny VLM family 'llava'.*idefics3"):
        parse_spec("tiny-vlm:llava")
    with pytest.raises(ConfigError, match="did you mean 'pretrain_steps'"):
        check_options("tiny-vlm", {"pretrain_step": 5})
    assert check_options("tiny-vlm", {"pretrain_steps": 0})["image_size"] == 32


def test_alignment_description_counts_the_shapes():
    one = {"caption": "a red circle at top left"}
    two = {"caption": "a red circle at top left and a blue square at bottom right"}
    assert vlm.describe(one) == " one shape: a red circle at top left"
    assert vlm.describe(two) == " two shapes: " + two["caption"]


def test_lazy_encoding_trains_exactly_like_eager(model_dir, shapes_dir, tmp_path):
    """data.encode: lazy (large image datasets) draws the same batches, so the same curve."""
    eager = run(cfg(model_dir, shapes_dir, mode="fp"), tmp_path / "eager", progress=False)
    lazy = run(cfg(model_dir, shapes_dir, mode="fp", data={"source": f"jsonl:{shapes_dir}", "encode": "lazy"}),
               tmp_path / "lazy", progress=False)
    assert lazy["status"] == "ok" and lazy["loss_curve"] == eager["loss_curve"]
    assert lazy["truncated_examples"] is None and eager["truncated_examples"] == 0  # lazy: not counted up front
