"""The hf | vllm switch, from the workflow config to lm-eval's arguments.

No vllm install is needed: the exact ``simple_evaluate`` arguments are built and
compared. The path tested is the real one: ``grades.workflow.eval_args`` (what the
evaluate rule passes) -> the ``grades.evaluate`` CLI parser -> ``build_lm_eval_args``."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from grades import evaluate as ev
from grades.evaluate import run as ev_run
from grades import workflow as gw

ROOT = Path(__file__).resolve().parent.parent
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
# the paper profile's two protocols: the commonsense generation tasks first, lm-eval's own second
TASKS = ["cs_boolq", "cs_piqa", "cs_siqa", "cs_hellaswag", "cs_winogrande", "cs_openbookqa", "cs_arc_challenge",
         "cs_arc_easy", "boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "openbookqa", "arc_challenge",
         "arc_easy"]
COMMON = {"tasks": TASKS, "num_fewshot": 0, "batch_size": 32, "limit": None, "use_cache": None,
          "cache_requests": False, "bootstrap_iters": 100000, "log_samples": True, "task_manager": None,
          "random_seed": 0, "numpy_random_seed": 0, "torch_random_seed": 0, "fewshot_random_seed": 0}


def _adapter(d: Path, r: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r}))
    return d


def lm_eval_kwargs(cfg: dict, model: str, weights: list[str]) -> dict:
    """What the evaluate rule would hand to lm-eval for one run of `model`."""
    argv = weights + ["--tasks", ",".join(gw.eval_tasks(cfg, model))] + shlex.split(gw.eval_args(cfg, model))
    a = ev.build_parser().parse_args(argv)
    return ev.build_lm_eval_args(
        model=a.model, tasks=ev.parse_tasks(a.tasks), adapter=a.adapter, backend=a.backend,
        batch_size=a.batch_size, dtype=a.dtype, device=a.device, limit=a.limit, num_fewshot=a.num_fewshot,
        seed=a.seed, gpu_memory_utilization=a.gpu_memory_utilization,
        tensor_parallel_size=a.tensor_parallel_size, max_model_len=a.max_model_len), a


def test_paper_vllm_lora_run(tmp_path):
    cfg = gw.load(copy.deepcopy(PAPER))
    ad = _adapter(tmp_path / "adapter", 16)
    kw, a = lm_eval_kwargs(cfg, "qwen3-14b", ["--model", "/m", "--adapter", str(ad)])
    assert kw == {**COMMON, "model": "vllm", "device": None, "model_args": {
        "pretrained": "/m", "dtype": "bfloat16", "tensor_parallel_size": 4, "gpu_memory_utilization": 0.85,
        "seed": 0, "max_model_len": 2048, "enable_lora": True, "max_lora_rank": 16,
        "lora_local_path": str(ad)}}
    assert a.merge_adapter is False
    # the rank comes from adapter_config.json, rounded up to a rank vLLM accepts
    kw, _ = lm_eval_kwargs(cfg, "qwen3-14b", ["--model", "/m", "--adapter", str(_adapter(tmp_path / "r100", 100))])
    assert kw["model_args"]["max_lora_rank"] == 128
    # a full fine-tuning run: no LoRA arguments at all
    kw, _ = lm_eval_kwargs(cfg, "qwen3-14b", ["--model", "/run/model"])
    assert kw["model_args"] == {"pretrained": "/run/model", "dtype": "bfloat16", "tensor_parallel_size": 4,
                                "gpu_memory_utilization": 0.85, "seed": 0, "max_model_len": 2048}


def test_paper_vllm_tensor_parallel_from_eval_gpus():
    p = copy.deepcopy(PAPER)
    p["models"]["qwen3-14b"]["eval_gpus"] = 2
    kw, _ = lm_eval_kwargs(gw.load(p), "qwen3-14b", ["--model", "/m"])
    assert kw["model_args"]["tensor_parallel_size"] == 2


def test_paper_hf_backend_with_peft(tmp_path):
    p = copy.deepcopy(PAPER)
    p["eval"]["backend"] = "hf"
    ad = _adapter(tmp_path / "adapter", 16)
    kw, a = lm_eval_kwargs(gw.load(p), "mistral-7b", ["--model", "/m", "--adapter", str(ad)])
    assert kw == {**COMMON, "model": "hf", "device": "cuda",
                  "model_args": {"pretrained": "/m", "dtype": "bfloat16", "peft": str(ad)}}


def test_merged_switch_reaches_the_cli(tmp_path):
    p = copy.deepcopy(PAPER)
    p["eval"]["lora"] = "merged"
    _, a = lm_eval_kwargs(gw.load(p), "qwen3-0.6b", ["--model", "/m", "--adapter", str(_adapter(tmp_path / "a", 8))])
    assert a.merge_adapter is True


@pytest.fixture(scope="module")
def tiny_with_adapter(tmp_path_factory):
    import transformers as tf
    from peft import LoraConfig, get_peft_model

    from grades.models.tiny import train_tokenizer

    root = tmp_path_factory.mktemp("merge")
    tok = train_tokenizer(["Q: where is the cat?\nA: on the mat"] * 8, 300)
    torch.manual_seed(0)
    model = tf.Qwen3ForCausalLM(tf.Qwen3Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               head_dim=8, max_position_embeddings=128,
                                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for n, prm in pm.named_parameters():
            if "lora_B" in n:
                prm.normal_(0, 0.5)
    pm.save_pretrained(root / "adapter")
    return root


def test_merge_adapter_equals_the_peft_model(tiny_with_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root = tiny_with_adapter
    out = ev.merge_adapter(root / "model", root / "adapter", tmp_path / "merged")
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert not list(out.glob("adapter_config.json"))  # a plain checkpoint
    x = torch.randint(0, 100, (2, 12))
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "model"), root / "adapter").eval()
    base = AutoModelForCausalLM.from_pretrained(root / "model").eval()
    with torch.no_grad():
        lm, lp, lb = merged(x).logits, peft(x).logits, base(x).logits
    torch.testing.assert_close(lm, lp, rtol=1e-4, atol=1e-5)
    assert (lm - lb).abs().max() > 1e-3  # the adapter changed the model


def test_evaluate_merged_scores_the_merged_model_and_records_it(tiny_with_adapter, tmp_path, monkeypatch):
    root = tiny_with_adapter
    seen = {}

    def fake_run(model_dir, adapter_dir, names, *a, **kw):
        seen.update(model=Path(model_dir), adapter=adapter_dir, files=sorted(p.name for p in Path(model_dir).iterdir()))
        res = {"results": {"piqa": {"acc,none": 0.5, "acc_stderr,none": 0.1}},
               "n-samples": {"piqa": {"original": 1838, "effective": 4}}, "versions": {"piqa": 1.0},
               "n-shot": {"piqa": 0}}
        return res, 0.1

    monkeypatch.setattr(ev_run, "run_lm_eval", fake_run)
    out = tmp_path / "eval.json"
    s = ev.evaluate(root / "model", ["piqa"], adapter=root / "adapter", out=out, merge=True,
                    merge_dir=tmp_path, limit=4)
    assert seen["adapter"] is None and seen["model"].parent.name.startswith("grades_merged_")
    assert "config.json" in seen["files"] and not seen["model"].exists()  # temporary, removed after
    disk = json.loads(out.read_text())
    assert disk["lora"] == "merged" and disk["adapter"] == str((root / "adapter").resolve())
    assert disk["task_versions"] == {"piqa": 1.0} and disk["tasks"]["piqa"]["acc"] == 0.5
    s2 = ev.evaluate(root / "model", ["piqa"], adapter=root / "adapter", limit=4)
    assert seen["adapter"] == (root / "adapter").resolve() and s2["lora"] == "adapter"
    assert s["model"] == s2["model"] == str((root / "model").resolve())


# ------------------------------------------------------- vision-language models
def vlm_kwargs(cfg: dict, model: str, weights: list[str], tasks: list[str]) -> tuple[dict, dict]:
    """What the evaluate_vlm rule hands to lm-eval for `model`: workflow args -> grades.vlm CLI ->
    evaluate_vlm's keyword arguments -> lm_eval_kwargs (the model an adapter was merged into, for vllm)."""
    from grades import vlm

    argv = ["evaluate", *weights, "--data", "/d", *shlex.split(gw.vlm_eval_args(cfg, model))]
    kw = vlm.evaluate_kwargs(vlm.build_parser().parse_args(argv))
    return kw, vlm.lm_eval_kwargs("/merged", tasks, **{k: kw[k] for k in (
        "limit", "batch_size", "dtype", "device", "seed", "apply_chat_template", "vllm", "backend")})


def test_paper_vlm_runs_through_vllm_vlm(tmp_path):
    cfg = gw.load(copy.deepcopy(PAPER))
    ad = _adapter(tmp_path / "adapter", 128)
    kw, lm = vlm_kwargs(cfg, "qwen2.5-vl-7b", ["--model", "/m", "--adapter", str(ad)], ["gqa", "vqav2", "coco_caption"])
    assert kw["backend"] == "vllm" and kw["adapter"] == str(ad) and kw["task"] == "gqa,vqav2,coco_caption"
    assert lm["model"] == "vllm-vlm" and lm["device"] is None and lm["apply_chat_template"] is True
    # vLLM puts LoRA on the language model only: the adapter is merged first, so none reaches vLLM
    # tensor parallelism over the model's 4 GPUs (28 query and 4 key/value heads, 16 in the vision tower)
    assert lm["model_args"] == {"pretrained": "/merged", "dtype": "bfloat16", "tensor_parallel_size": 4,
                                "gpu_memory_utilization": 0.85, "seed": 0, "max_model_len": 2048, "max_images": 1}
    assert lm["tasks"] == ["gqa", "vqav2", "coco_caption"] and lm["batch_size"] == 32 and lm["limit"] is None
    with pytest.raises(ev.EvalConfigError, match="merge the adapter"):
        ev.build_lm_eval_args(model="/m", tasks=["gqa"], adapter=ad, backend="vllm-vlm")
    # nanoVLM is fine-tuned on plain prompts: no chat template
    _, lm = vlm_kwargs(cfg, "nanovlm", ["--model", "/m"], ["mmstar_math"])
    assert "apply_chat_template" not in lm and lm["model"] == "vllm-vlm"


def test_paper_vlm_hf_multimodal_with_peft(tmp_path):
    p = copy.deepcopy(PAPER)
    p["eval"]["backend"] = "hf"
    ad = _adapter(tmp_path / "adapter", 128)
    kw, _ = vlm_kwargs(gw.load(p), "qwen2.5-vl-7b", ["--model", "/m", "--adapter", str(ad)], ["gqa"])
    from grades import vlm

    lm = vlm.lm_eval_kwargs("/m", ["gqa"], adapter=kw["adapter"], backend=kw["backend"], device=kw["device"],
                            dtype=kw["dtype"], apply_chat_template=kw["apply_chat_template"])
    assert lm["model"] == "hf-multimodal" and lm["device"] == "cuda"
    assert lm["model_args"] == {"pretrained": "/m", "dtype": "bfloat16", "peft": str(ad.resolve())}
