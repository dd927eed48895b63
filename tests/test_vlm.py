"""grades.vlm: per-tower GradES on a VLM, the tiny Idefics3, batches, scoring, eval.json."""

from __future__ import annotations

import csv
import json
import math
import time

import pytest
import torch
from test_vlm_components import add_lora, build_vlm, dummy_inputs

from grades.models import is_vlm_dir
from grades import vlm
from grades.components import LANGUAGE, VISION, discover_components
from grades.config import ConfigError, GradESConfig
from grades.controller import Controller
from grades.data import DataError, prepare_dataset
from grades.data.shapes import load_examples
from grades.methods.grades import GradES

SMALL_DATA = dict(n_train=24, n_validation=4, n_test=8, seed=0)
SMALL_VLM = dict(hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64, vision_hidden_size=16,
                 vision_intermediate_size=32, vocab_size=300)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return prepare_dataset("synthetic:shapes", tmp_path_factory.mktemp("vlm") / "shapes", **SMALL_DATA)


@pytest.fixture(scope="module")
def tiny(shapes_dir, tmp_path_factory):
    d = vlm.prepare_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model", data=str(shapes_dir), **SMALL_VLM)
    return d


# ------------------------------------------------------- per-tower thresholds
@pytest.mark.parametrize("family,mode", [("idefics3", "fp"), ("qwen2_5_vl", "fp"), ("idefics3", "lora")])
def test_vision_tau_huge_language_tau_tiny_freezes_only_vision(family, mode, tmp_path):
    model = build_vlm(family)
    if mode == "lora":
        model = add_lora(model, vlm.expand_lora_targets(model, ["@language", "@vision"]))
        with torch.no_grad():  # B starts at zero; make A's gradients nonzero too
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    comps = discover_components(model)
    n_vis = sum(c.tower == VISION for c in comps)
    n_lang = sum(c.tower == LANGUAGE for c in comps)
    assert n_vis and n_lang
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    cfg = GradESConfig(vision_tau=1e9, language_tau=1e-12, alpha=0.0)
    ctl = Controller(model, opt, GradES(cfg), planned_steps=4, components=comps)
    batch = dummy_inputs(family, model)
    for step in range(1, 5):
        model(**batch).loss.backward()
        ctl.before_optimizer_step(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ctl.after_optimizer_step(step)
        if step == 1:
            assert ctl.events == [], "the first delta is undefined: nothing freezes"
    assert len(ctl.events) == n_vis and {e.tower for e in ctl.events} == {VISION}
    assert {e.step for e in ctl.events} == {2}
    assert all(e.tau == 1e9 for e in ctl.events)
    assert not ctl.should_stop  # the language matrices are still training
    for c, frozen in zip(comps, ctl.freezer.frozen):
        assert frozen == (c.tower == VISION)
        assert all(p.requires_grad == (c.tower == LANGUAGE) for p in c.params)
    # the language tower still learns after the vision tower froze
    model(**batch).loss.backward()
    assert all(p.grad is not None for c in comps if c.tower == LANGUAGE for p in c.params)
    assert all(p.grad is None for c in comps if c.tower == VISION for p in c.params)
    # outputs carry the tower
    paths = ctl.write(tmp_path)
    ev = list(csv.DictReader(paths["freeze_events"].read_text().splitlines()))
    assert len(ev) == n_vis and {r["tower"] for r in ev} == {"vision"}
    sig = list(csv.DictReader(paths["signals"].read_text().splitlines()))
    assert {r["tower"] for r in sig} == {"vision", "language"}
    assert sum(r["tower"] == "language" for r in sig) == 4 * n_lang
    late = [r for r in sig if r["tower"] == "vision" and int(r["step"]) > 2]
    assert len(late) == 2 * n_vis and all(math.isnan(float(r["value"])) for r in late)  # frozen: not measured
    assert json.loads(paths["summary"].read_text())["frozen"] == n_vis


def test_language_tau_falls_back_to_tau():
    cfg = GradESConfig(tau=0.5, vision_tau=2.0)
    assert cfg.tau_for(VISION) == 2.0 and cfg.tau_for(LANGUAGE) == 0.5


# ---------------------------------------------------------------- tiny VLM
def test_prepared_tiny_vlm_loads_with_auto_classes(tiny):
    import transformers as tf

    assert is_vlm_dir(tiny)
    info = json.loads((tiny / "grades_model.json").read_text())
    assert info["kind"] == "vlm" and info["family"] == "idefics3" and info["image_seq_len"] == 4
    assert sum(info["params_by_part"].values()) == info["params"]
    model = tf.AutoModelForImageTextToText.from_pretrained(str(tiny))
    proc = tf.AutoProcessor.from_pretrained(str(tiny))
    assert type(model).__name__ == "Idefics3ForConditionalGeneration"
    assert type(proc).__name__ == "Idefics3Processor"
    assert type(proc.image_processor).__name__ == "Idefics3ImageProcessorPil"  # no torchvision needed
    comps = discover_components(model)
    assert sum(c.tower == VISION for c in comps) == 6 * 2 and sum(c.tower == LANGUAGE for c in comps) == 7 * 2


def test_alignment_pretraining_is_recorded(shapes_dir, tmp_path):
    d = vlm.prepare_tiny_vlm(tmp_path / "m", data=str(shapes_dir), pretrain_steps=3, pretrain_batch_size=4,
                             threads=1, **SMALL_VLM)
    info = json.loads((d / "grades_model.json").read_text())
    assert info["pretrain"]["steps"] == 3 and [s for s, _ in info["pretrain"]["loss"]] == [1, 3]
    assert vlm.load_vlm(d)[0] is not None


def test_build_options_are_checked():
    with pytest.raises(ConfigError, match="vision_hiden_size.*did you mean 'vision_hidden_size'"):
        vlm.check_options({"vision_hiden_size": 8})
    with pytest.raises(ConfigError, match="family = 'qwen2_vl'"):
        vlm.check_options({"family": "qwen2_vl"})
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        vlm.check_options({"image_size": 30})
    with pytest.raises(ConfigError, match="pretrain_steps"):
        vlm.check_options({"pretrain_steps": 5})


def test_encode_labels_only_on_the_answer(tiny, shapes_dir):
    _, proc = vlm.load_vlm(tiny)
    rows = load_examples(shapes_dir, "train")[:3]
    items, n_trunc = vlm.encode_examples(rows, proc)
    tok = proc.tokenizer
    assert n_trunc == 0
    for ex, it in zip(rows, items):
        ids, lab = it["input_ids"], it["labels"]
        n_img = sum(i == proc.image_token_id for i in ids)
        assert n_img == 4  # (32 / 8)^2 / 2^2, expanded by the processor
        first = next(i for i, v in enumerate(lab) if v != -100)
        assert all(v == -100 for v in lab[:first]) and lab[first:] == ids[first:]
        assert ids[-1] == tok.eos_token_id
        assert tok.decode(ids[first:-1]) == " " + ex["answer"]
        assert tok.decode(ids[:first]).endswith(f"Q: {ex['question']}\nA:")
        assert set(it["extras"]) == {"pixel_values", "pixel_attention_mask"}
    # loss_on=all trains on the prompt too (image placeholders included, as the text path does)
    all_items, _ = vlm.encode_examples(rows[:1], proc, loss_on="all")
    assert all_items[0]["labels"] == all_items[0]["input_ids"]
    # too long: image tokens are never cut
    n = len(items[0]["input_ids"])
    cut, k = vlm.encode_examples(rows[:1], proc, seq_len=n - 1)
    assert k == 1 and len(cut[0]["input_ids"]) == n - 1
    with pytest.raises(DataError, match="more than seq_len=5"):
        vlm.encode_examples(rows[:1], proc, seq_len=5)
    with pytest.raises(DataError, match="raise seq_len"):
        vlm.encode_examples(rows[:1], proc, seq_len=n - 1, too_long="error")


def test_batches_train_and_resume_identically(tiny, shapes_dir):
    model, proc = vlm.load_vlm(tiny)
    items, _ = vlm.encode_examples(load_examples(shapes_dir, "train"), proc)
    pid = vlm.pad_id(proc)
    s1 = vlm.VLMBatchStream(items, 5, pid, seed=3)
    b = s1.next()
    assert b["pixel_values"].shape[:2] == (5, 1) and b["input_ids"].shape[0] == 5
    assert (b["input_ids"][b["attention_mask"] == 0] == pid).all()
    assert (b["labels"][b["attention_mask"] == 0] == -100).all()
    state = s1.state_dict()
    rest = [s1.next() for _ in range(6)]  # crosses an epoch boundary (24 items)
    s2 = vlm.VLMBatchStream(items, 5, pid, seed=0)
    s2.load_state_dict(state)
    for x in rest:
        y = s2.next()
        assert all(torch.equal(x[k], y[k]) for k in x)
    out = model(**b)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for c in discover_components(model) for p in c.params)


def test_pad_cat_pads_other_dims():
    a, b = torch.ones(1, 1, 2, 2), torch.ones(1, 2, 3, 2)
    out = vlm.pad_cat([a, b])
    assert out.shape == (2, 2, 3, 2) and out[0, 1].abs().sum() == 0 and out[0, 0, 2].abs().sum() == 0


def test_scores_match_unbatched_loglikelihood(tiny, shapes_dir):
    model, proc = vlm.load_vlm(tiny)
    model.eval()
    rows = load_examples(shapes_dir, "test")[:3]
    scores = vlm.score_multiple_choice(model, proc, rows, batch_size=5)  # batches mix examples and padding
    tok = proc.tokenizer
    for ex, s in zip(rows, scores):
        assert s["label"] == ex["label"] and len(s["loglikelihoods"]) == len(ex["choices"])
        p, extras = vlm.encode_prompt(proc, ex)
        for j, ch in enumerate(ex["choices"]):
            c = tok(" " + ch, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p + c])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=torch.ones_like(ids), **extras).logits, -1)
            want = sum(float(logp[0, len(p) + k - 1, t]) for k, t in enumerate(c))
            assert math.isclose(s["loglikelihoods"][j], want, rel_tol=1e-4, abs_tol=1e-4)
        assert s["pred"] == max(range(len(ex["choices"])), key=lambda j: s["loglikelihoods"][j])
        assert s["acc"] == float(s["pred"] == ex["label"])


def test_mean_stderr_is_lm_evals():
    m, se = vlm.mean_stderr([1, 0, 1, 1])
    assert m == 0.75 and math.isclose(se, math.sqrt(0.75 * 0.25 / 3))
    assert vlm.mean_stderr([1.0]) == (1.0, None) and vlm.mean_stderr([]) == (None, None)


def test_evaluate_writes_eval_json_like_grades_evaluate(tiny, shapes_dir, tmp_path):
    out = tmp_path / "eval.json"
    s = vlm.evaluate_vlm(tiny, shapes_dir, out=out, batch_size=8, threads=1, samples_out=tmp_path / "s.jsonl")
    assert json.loads(out.read_text()) == json.loads(json.dumps(s))
    for key in ("status", "tasks", "backend", "model", "adapter", "tokenizer", "batch_size", "dtype", "device",
                "limit", "num_fewshot", "seed", "lm_eval_version", "transformers_version", "peft_version",
                "torch_version", "model_num_parameters", "eval_tokens", "eval_flops", "threads", "wall_time_s",
                "lm_eval_time_s"):
        assert key in s, key
    assert s["status"] == "ok" and s["backend"] == "grades-vlm"
    t = s["tasks"]["shapes_mc"]
    for key in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n", "n_total", "version", "num_fewshot",
                "n_choices", "n_choices_range", "chance_acc", "data"):
        assert key in t, key
    assert t["n"] == t["n_total"] == 8 and t["n_choices"] == 4 and t["chance_acc"] == 0.25
    samples = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and math.isclose(t["acc"], sum(x["acc"] for x in samples) / 8)
    assert sum(v["n"] for v in t["by_type"].values()) == 8
    lim = vlm.evaluate_vlm(tiny, shapes_dir, limit=3, task="x")
    assert lim["tasks"]["x"]["n"] == 3 and lim["tasks"]["x"]["n_total"] == 8


def test_lora_train_save_and_evaluate_adapter(tiny, shapes_dir, tmp_path):
    """The path train.py takes for mode: lora (task_type CAUSAL_LM), then evaluation with --adapter."""
    from peft import LoraConfig, get_peft_model

    model, proc = vlm.load_vlm(tiny)
    targets = vlm.expand_lora_targets(model, ["@language", "@vision"])
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets, task_type="CAUSAL_LM"))
    comps = discover_components(model)
    assert len(comps) == 12 + 14 and all(c.lora for c in comps)
    items, _ = vlm.encode_examples(load_examples(shapes_dir, "train"), proc)
    vlm.train_steps(model, vlm.VLMBatchStream(items, 4, vlm.pad_id(proc), 0), steps=3, lr=1e-2)
    model.save_pretrained(tmp_path / "adapter")
    base = vlm.evaluate_vlm(tiny, shapes_dir, limit=4)
    ada = vlm.evaluate_vlm(tiny, shapes_dir, limit=4, adapter=tmp_path / "adapter")
    assert ada["adapter"] and base["adapter"] is None
    assert base["model_num_parameters"] < ada["model_num_parameters"]


def test_expand_lora_targets_rejects_unknown_tower(tiny):
    model, _ = vlm.load_vlm(tiny)
    with pytest.raises(ConfigError, match="@projector"):
        vlm.expand_lora_targets(model, ["@projector"])
    t = vlm.expand_lora_targets(model, ["q_proj", "@vision"])
    assert t[0] == "q_proj" and all(x.startswith("model.vision_model.") for x in t[1:]) and len(t) == 13


def test_missing_image_is_reported(tiny, shapes_dir):
    _, proc = vlm.load_vlm(tiny)
    ex = dict(load_examples(shapes_dir, "test")[0], image_path=str(shapes_dir / "images" / "nope.png"))
    with pytest.raises(vlm.VLMError, match="nope.png does not exist"):
        vlm.encode_examples([ex], proc)


def test_cli_prepare_and_evaluate(shapes_dir, tmp_path, capsys):
    opts = [f"--set={k}={v}" for k, v in SMALL_VLM.items()]
    assert vlm.main(["prepare", "--out", str(tmp_path / "m"), "--data", str(shapes_dir), *opts]) == 0
    assert vlm.main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(shapes_dir), "--out",
                     str(tmp_path / "e.json"), "--threads", "1"]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["tasks"]["shapes_mc"]["n"] == 8
    assert vlm.main(["prepare", "--out", str(tmp_path / "bad"), "--set", "family=llava"]) == 2
    assert "unknown tiny VLM family" in capsys.readouterr().err


# --------------------------------------------------------------- learning
@pytest.mark.slow
def test_finetuning_moves_accuracy_above_chance(tmp_path):
    """A randomly initialised tiny VLM (about 0.46M parameters), 1000 steps of batch 16 on
    2000 pictures, one thread (under a minute): accuracy rises more than 2 stderr above
    chance (counting is learnt first; see the measurements in the docstring of grades/vlm/build.py)."""
    torch.set_num_threads(1)
    data = prepare_dataset("synthetic:shapes", tmp_path / "shapes")
    model, proc = vlm.build_tiny_vlm({"data": str(data)})
    test = load_examples(data, "test")
    before = vlm.summarize_scores(vlm.score_multiple_choice(model, proc, test, batch_size=32))
    items, _ = vlm.encode_examples(load_examples(data, "train"), proc)
    t0 = time.perf_counter()
    log = vlm.train_steps(model, vlm.VLMBatchStream(items, 16, vlm.pad_id(proc), 0), steps=1000, lr=2e-3)
    after = vlm.summarize_scores(vlm.score_multiple_choice(model, proc, test, batch_size=32))
    print(f"\nbefore {before['acc']:.3f} ± {before['acc_stderr']:.3f}; after {after['acc']:.3f} ± "
          f"{after['acc_stderr']:.3f} ({time.perf_counter() - t0:.0f} s); by type "
          f"{ {k: round(v['acc'], 2) for k, v in after['by_type'].items()} }; loss {log['loss'][0]} -> {log['loss'][-1]}")
    assert after["acc"] - 0.25 > 2 * after["acc_stderr"]
    assert after["acc"] - before["acc"] > 2 * math.hypot(after["acc_stderr"], before["acc_stderr"])


def test_short_answers_go_through_lm_eval_hf_multimodal(tiny, shapes_dir, tmp_path):
    """shapes_gen (a template in evals/tasks) runs through lm-eval's hf-multimodal backend, beside
    the multiple-choice task of our scorer; its responses are the model's own greedy decoding
    of the training prompt with the image (checked here with model.generate)."""
    assert vlm.lm_eval_tasks(["shapes_mc", "shapes_gen"]) == ["shapes_gen"]
    s = vlm.evaluate_vlm(tiny, shapes_dir, task="shapes_mc,shapes_gen", limit=4, batch_size=1, threads=1,
                         samples_out=tmp_path / "s.jsonl")
    assert set(s["tasks"]) == {"shapes_mc", "shapes_gen"} and s["lm_eval_version"] and s["lm_eval_time_s"] > 0
    g = s["tasks"]["shapes_gen"]
    assert g["backend"] == "lm-eval hf-multimodal" and g["n"] == 4 and g["output_type"] == "generate_until"
    recs = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    gen = [r for r in recs if r["task"] == "shapes_gen"]
    assert len(gen) == 4 and len(recs) == 8
    assert math.isclose(g["exact_match"], sum(r["exact_match"] for r in gen) / 4)
    model, proc = vlm.load_vlm(tiny)
    examples = {ex["id"]: ex for ex in load_examples(shapes_dir, "test")}
    for r in gen:
        ex = examples[r["id"]]
        assert r["target"] == ex["answer"]
        ids, extra = vlm.encode_prompt(proc, ex)
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), **extra, max_new_tokens=6,
                                 do_sample=False)
        text = proc.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).split("\n")[0]
        assert r["response"] == text, (r, text)
        assert r["exact_match"] == float(r["filtered"].strip().lower() == ex["answer"].lower())


@pytest.mark.parametrize("task,words", [("", ["no task"]), ("mc_a,mc_b", ["one multiple-choice task", "mc_a", "mc_b"])])
def test_bad_task_list_is_refused_before_anything_is_written(tiny, shapes_dir, tmp_path, task, words):
    with pytest.raises(vlm.VLMError) as e:
        vlm.evaluate_vlm(tiny, shapes_dir, task=task, out=tmp_path / "eval.json")
    for w in words:
        assert w in str(e.value)
    assert not (tmp_path / "eval.json").exists()


CHAT = ("{% for m in messages %}User:{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}")


def test_chat_prompts_and_lazy_items(tiny, shapes_dir):
    _, proc = vlm.load_vlm(tiny)
    rows = load_examples(shapes_dir, "train")[:3]
    with pytest.raises(vlm.VLMError, match="no chat template; use prompt: plain"):
        vlm.encode_examples(rows[:1], proc, chat=True)
    proc.chat_template = CHAT
    items, _ = vlm.encode_examples(rows, proc, chat=True)
    tok = proc.tokenizer
    for r, it in zip(rows, items):
        text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                      {"type": "text", "text": r["question"]}]}],
                                        add_generation_prompt=True, tokenize=False)
        assert text == f"User:<image>{r['question']}<end_of_utterance>\nAssistant:"
        n = sum(1 for x in it["labels"] if x == -100)
        assert it["input_ids"][:n] == proc(text=[text], images=[[vlm.open_image(r)]],
                                           add_special_tokens=False)["input_ids"][0]
        # the loss is on the bare answer and the end of the turn only
        assert tok.decode(it["input_ids"][n:]) == r["answer"] + tok.eos_token
    # lazy items: the same encoding, made when drawn
    lazy = vlm.LazyItems(rows, proc, chat=True)
    assert len(lazy) == 3
    for a, b in zip(items, (lazy[i] for i in range(3))):
        assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"]
        assert all(torch.equal(a["extras"][k], b["extras"][k]) for k in a["extras"])


def test_vllm_backend_merges_the_adapter_first(tiny, shapes_dir, tmp_path, monkeypatch):
    """vLLM puts LoRA on the language model only: with backend vllm, grades.vlm merges a VLM's
    adapter (both towers) into the model and hands lm-eval the merged checkpoint."""
    from peft import LoraConfig, PeftModel, get_peft_model

    net, proc = vlm.load_vlm(tiny)
    targets = vlm.expand_lora_targets(net, ["@language", "@vision"])
    peft = get_peft_model(net, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft.save_pretrained(tmp_path / "adapter")
    seen = {}

    def fake_run(model_dir, tasks, include, **kw):
        m, _ = vlm.load_vlm(model_dir)
        base, _ = vlm.load_vlm(tiny)
        want = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).merge_and_unload()
        seen.update(model=str(model_dir), adapter=kw["adapter"], backend=kw["backend"], tasks=tasks,
                    same=all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), want.state_dict().values())))
        return {t: {"metric": "vqa_acc", "score": 0.5, "vqa_acc": 0.5, "n": 2} for t in tasks}

    monkeypatch.setattr(vlm.evaluate, "run_lm_eval", fake_run)  # where evaluate_vlm looks it up
    vlm.evaluate_vlm(tiny, None, task="vqav2", adapter=tmp_path / "adapter", backend="vllm",
                         vllm={"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": None},
                         out=tmp_path / "eval.json")
    assert seen["adapter"] is None and seen["backend"] == "vllm" and seen["same"] and seen["tasks"] == ["vqav2"]
    assert seen["model"] != str(tiny) and not (tmp_path / "grades-vlm-merged").exists()
    disk = json.loads((tmp_path / "eval.json").read_text())
    assert disk["lora"] == "merged" and disk["tasks"]["vqav2"]["score"] == 0.5 and disk["device"] is None
    # counted from the merged checkpoint's safetensors headers: the base model's parameters
    assert disk["model_num_parameters"] == sum(p.numel() for p in vlm.load_vlm(tiny)[0].parameters())
    # the multiple-choice scorer is transformers-only; data is needed only by local tasks
    with pytest.raises(vlm.VLMError, match="scored with transformers"):
        vlm.evaluate_vlm(tiny, shapes_dir, task="shapes_mc", backend="vllm")
    with pytest.raises(vlm.VLMError, match="pass --data DIR"):
        vlm.evaluate_vlm(tiny, None, task="shapes_mc")
