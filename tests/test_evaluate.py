"""grades.evaluate: task templates, lm-eval argument building, and real lm-eval runs
(hf backend, CPU) on a tiny random Qwen3 with a freshly trained byte-level BPE."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from grades import evaluate as ev
from grades.evaluate import run as ev_run
from grades.resources import tasks_dir

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # peft -> transformers deprecation

N_ROWS = 20
THREADS_BEFORE = torch.get_num_threads()
WORDS = ("the a cat dog ran sat on mat home went because wanted to eat sleep play "
         "happy sad friend gift").split()


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ctx = " ".join(rng.choice(WORDS) for _ in range(8)).capitalize() + "."
        q = f"What will {rng.choice(['Alex', 'Sam', 'Kim'])} want to do next?"
        choices = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))) for _ in range(3)]
        rows.append({"id": f"r{i}", "context": ctx, "question": q, "choices": choices,
                     "label": rng.randrange(3)})
    return rows


def _write_data(d: Path, rows: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "meta.json").write_text(json.dumps({"name": "tiny", "n_choices": 3}))
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{"model": dir, "data": dir, "adapter": dir, "rows": [...]} built once per module."""
    import transformers as tf
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("tiny_eval")
    rows = _rows(N_ROWS)
    data = _write_data(root / "data", rows)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"Q: {r['context']} {r['question']}\nA: {c}" for r in rows for c in r["choices"]]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                      pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = tf.Qwen3Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=8, max_position_embeddings=512, tie_word_embeddings=True,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = tf.Qwen3ForCausalLM(cfg)
    model.save_pretrained(root / "model")
    fast.save_pretrained(root / "model")

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                  target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():  # LoRA B starts at zero (a no-op adapter): make it bite
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(root / "adapter")
    return {"model": root / "model", "data": data, "adapter": root / "adapter", "rows": rows,
            "root": root}


@pytest.fixture(scope="module")
def base_run(tiny):
    """One real CLI run (in-process) without adapter; returns (eval.json, samples)."""
    out, samples = tiny["root"] / "base" / "eval.json", tiny["root"] / "base" / "samples.jsonl"
    rc = ev.main(["--model", str(tiny["model"]), "--tasks", "world_mc", "--data", str(tiny["data"]),
                  "--out", str(out), "--samples-out", str(samples), "--batch-size", "8",
                  "--threads", "1"])
    assert rc == 0
    return json.loads(out.read_text()), [json.loads(x) for x in samples.read_text().splitlines()]


# --------------------------------------------------------------------------- templates

def test_local_templates_mirror_lm_eval_social_iqa(tmp_path):
    from lm_eval.tasks._yaml_loader import load_yaml
    import lm_eval

    assert set(ev.local_tasks()) == {"world_mc", "siqa_local", "shapes_gen", "cs_siqa_local"}
    assert not (tasks_dir().parent / "__init__.py").exists()  # `evals` is a data dir
    d = tmp_path / 'we"ird dir'
    ev.render_tasks({"siqa_local": d, "world_mc": tmp_path / "w"}, tmp_path / "inc",
                    cache_dir=tmp_path / "c")
    cfg = load_yaml(tmp_path / "inc" / "siqa_local" / "siqa_local.yaml", resolve_func=False)
    assert cfg["dataset_kwargs"]["data_files"] == {"validation": f"{d}/validation.jsonl",
                                                   "test": f"{d}/test.jsonl"}
    assert cfg["dataset_kwargs"]["cache_dir"] == str(tmp_path / "c")
    assert cfg["test_split"] == "test" and cfg["task"] == "siqa_local"
    siqa = load_yaml(Path(lm_eval.__file__).parent / "tasks" / "siqa" / "siqa.yaml",
                     resolve_func=False)
    for key in ("output_type", "doc_to_text", "target_delimiter", "metric_list"):
        assert cfg[key] == siqa[key], key
    w = load_yaml(tmp_path / "inc" / "world_mc" / "world_mc.yaml", resolve_func=False)
    assert w["dataset_kwargs"]["data_files"]["test"] == str(tmp_path / "w" / "test.jsonl")


def test_rendered_task_prompt_contract(tiny, tmp_path):
    from lm_eval.tasks import TaskManager

    inc = ev.render_tasks({"world_mc": tiny["data"]}, tmp_path / "inc", cache_dir=tmp_path / "c")
    task = TaskManager(include_path=str(inc), include_defaults=False).load(["world_mc"])["tasks"]["world_mc"]
    docs = list(task.test_docs())
    assert len(docs) == N_ROWS
    doc, row = docs[0], tiny["rows"][0]
    assert task.doc_to_text(doc) == f"Q: {row['context']} {row['question']}\nA:"
    assert task.doc_to_choice(doc) == row["choices"]
    assert task.doc_to_target(doc) == row["label"]
    assert task.config.target_delimiter == " "


def test_standard_task_names_exist_in_lm_eval():
    import lm_eval
    from lm_eval.tasks import TaskManager

    t = Path(lm_eval.__file__).parent / "tasks"
    dirs = [t / s for s in ("super_glue/boolq", "piqa", "siqa", "hellaswag", "winogrande",
                            "openbookqa", "arc")]
    tm = TaskManager(include_path=[str(d) for d in dirs], include_defaults=False)
    assert set(ev.STANDARD_TASKS) <= set(tm.all_tasks)


# --------------------------------------------------------------------------- args

def test_build_lm_eval_args_hf(tmp_path):
    args = ev.build_lm_eval_args(model="/m", tasks=["world_mc", "piqa"], adapter="/a",
                                 batch_size=16, dtype="float32", device="cpu", limit=5,
                                 num_fewshot=0, seed=3)
    assert args == {
        "model": "hf",
        "model_args": {"pretrained": "/m", "dtype": "float32", "peft": "/a"},
        "tasks": ["world_mc", "piqa"], "num_fewshot": 0, "batch_size": 16, "device": "cpu",
        "limit": 5, "use_cache": None, "cache_requests": False, "bootstrap_iters": 100000,
        "log_samples": True, "task_manager": None, "random_seed": 3, "numpy_random_seed": 3,
        "torch_random_seed": 3, "fewshot_random_seed": 3,
    }
    no_adapter = ev.build_lm_eval_args(model="/m", tasks=["boolq"])
    assert no_adapter["model_args"] == {"pretrained": "/m", "dtype": "float32"}
    with_tok = ev.build_lm_eval_args(model="/m", tasks=["boolq"], tokenizer="/t", dtype="bfloat16")
    assert with_tok["model_args"] == {"pretrained": "/m", "dtype": "bfloat16", "tokenizer": "/t"}
    # a job with several GPUs: the hf backend spreads the model's layers over them
    spread = ev.build_lm_eval_args(model="/m", tasks=["boolq"], tensor_parallel_size=4, device="cuda")
    assert spread["model_args"] == {"pretrained": "/m", "dtype": "float32", "parallelize": True}
    import inspect

    from lm_eval.models.huggingface import HFLM

    assert "parallelize" in inspect.signature(HFLM.__init__).parameters


def test_build_lm_eval_args_vllm(tmp_path):
    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32,
                                                        "peft_type": "LORA"}))
    args = ev.build_lm_eval_args(model="/m", tasks=["arc_easy"], adapter=ad, backend="vllm",
                                 batch_size="auto", dtype="bfloat16", device="cuda", seed=1,
                                 gpu_memory_utilization=0.8, tensor_parallel_size=2)
    assert args == {
        "model": "vllm",
        "model_args": {"pretrained": "/m", "dtype": "bfloat16", "tensor_parallel_size": 2,
                       "gpu_memory_utilization": 0.8, "seed": 1, "enable_lora": True,
                       "max_lora_rank": 16, "lora_local_path": str(ad)},
        "tasks": ["arc_easy"], "num_fewshot": 0, "batch_size": "auto", "device": None,
        "limit": None, "use_cache": None, "cache_requests": False, "bootstrap_iters": 100000,
        "log_samples": True, "task_manager": None, "random_seed": 1, "numpy_random_seed": 1,
        "torch_random_seed": 1, "fewshot_random_seed": 1,
    }
    # every model_arg is a parameter of lm-eval's VLLM (or one of the LLM(**kwargs) it forwards)
    (ad / "adapter_config.json").write_text(json.dumps({"r": 4, "rank_pattern": {"q_proj": 24}}))
    assert ev.max_lora_rank(ad) == 32  # max(r, rank_pattern) rounded up to a vLLM rank
    plain = ev.build_lm_eval_args(model="/m", tasks=["piqa"], backend="vllm", max_model_len=2048)
    assert plain["model_args"] == {"pretrained": "/m", "dtype": "float32", "tensor_parallel_size": 1,
                                   "gpu_memory_utilization": 0.9, "seed": 0, "max_model_len": 2048}


def test_vllm_model_args_match_lm_eval_signature():
    """Explicit VLLM params must exist in lm-eval's VLLM.__init__ (checked from source:
    importing the module needs vllm)."""
    import ast
    import lm_eval

    src = (Path(lm_eval.__file__).parent / "models" / "vllm_causallms.py").read_text()
    cls = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ClassDef) and n.name == "VLLM")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    params = {a.arg for a in init.args.args + init.args.kwonlyargs}
    assert {"pretrained", "dtype", "tensor_parallel_size", "seed", "max_lora_rank",
            "lora_local_path", "max_model_len", "batch_size"} <= params
    assert "enable_lora" in src and "gpu_memory_utilization" not in params  # -> LLM(**kwargs)


def test_task_summary_from_lm_eval_results():
    """lm-eval result keys are "metric,filter"; "N/A" stderrs become null; varying choice
    counts (ARC) give n_choices = 1/chance so that 1/n_choices is the chance accuracy."""
    res = {"results": {"arc_easy": {"alias": "arc_easy", "acc,none": 1.0, "acc_stderr,none": "N/A",
                                    "acc_norm,none": 0.0, "acc_norm_stderr,none": "N/A"}},
           "n-samples": {"arc_easy": {"original": 2376, "effective": 1}},
           "versions": {"arc_easy": 1.0}, "n-shot": {"arc_easy": 0}}
    samples = [{"arguments": [("q", " a")] * 4}, {"arguments": {"gen_args_0": {"arg_0": "q", "arg_1": " a"},
                                                               "gen_args_1": {"arg_0": "q", "arg_1": " b"}}}]
    t = ev.task_summary("arc_easy", res, samples, None)
    assert t["acc"] == 1.0 and t["acc_stderr"] is None and t["acc_norm"] == 0.0
    assert t["n"] == 1 and t["n_total"] == 2376 and t["n_choices_range"] == [2, 4]
    assert t["chance_acc"] == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert 1 / t["n_choices"] == pytest.approx(t["chance_acc"])


# --------------------------------------------------------------------------- real runs

@pytest.mark.slow
def test_end_to_end_cli(tiny, base_run):
    out, samples = base_run
    assert out["status"] == "ok"
    t = out["tasks"]["world_mc"]
    assert t["n"] == N_ROWS == t["n_total"] == len(samples)
    assert 0.0 <= t["acc"] <= 1.0
    # lm-eval's closed-form stderr of a mean of 0/1 scores (ddof=1)
    assert t["acc_stderr"] == pytest.approx(math.sqrt(t["acc"] * (1 - t["acc"]) / (t["n"] - 1)))
    assert t["acc_norm"] is None and t["acc_norm_stderr"] is None  # social_iqa reports acc only
    assert t["n_choices"] == 3 and t["n_choices_range"] == [3, 3]
    assert t["chance_acc"] == pytest.approx(1 / 3)
    assert t["version"] == 1.0 and t["num_fewshot"] == 0
    for key in ("backend", "model", "adapter", "batch_size", "dtype", "limit", "num_fewshot",
                "seed", "lm_eval_version", "transformers_version", "wall_time_s", "eval_flops"):
        assert key in out, key
    assert out["backend"] == "hf" and out["adapter"] is None and out["batch_size"] == 8
    assert out["threads"] == 1 and torch.get_num_threads() == THREADS_BEFORE  # restored
    assert out["model"] == str(tiny["model"].resolve()) and out["limit"] is None
    assert out["lm_eval_version"] == "0.4.13" and out["wall_time_s"] > 0
    assert out["eval_flops"] > 0 and out["model_num_parameters"] > 0
    # samples agree with the summary and with the data
    assert [s["label"] for s in samples] == [r["label"] for r in tiny["rows"]]
    assert all(len(s["loglikelihoods"]) == 3 for s in samples)
    assert all((s["pred"] == s["label"]) == (s["acc"] == 1.0) for s in samples)
    assert sum(s["acc"] for s in samples) / N_ROWS == pytest.approx(t["acc"])
    assert not list(tiny["root"].glob("base/.*.tmp"))  # atomic write left no temp file


@pytest.mark.slow
def test_end_to_end_with_lora_adapter(tiny, base_run):
    _, base_samples = base_run
    out_path = tiny["root"] / "lora" / "eval.json"
    samples_path = tiny["root"] / "lora" / "samples.jsonl"
    out = ev.evaluate(tiny["model"], ["world_mc"], data=tiny["data"], adapter=tiny["adapter"],
                      out=out_path, samples_out=samples_path, batch_size=8, limit=12,
                      threads=1, tokenizer=tiny["model"])
    assert json.loads(out_path.read_text()) == json.loads(json.dumps(out))
    assert out["adapter"] == str(tiny["adapter"].resolve()) and out["limit"] == 12
    assert out["tokenizer"] == str(tiny["model"].resolve())
    t = out["tasks"]["world_mc"]
    assert t["n"] == 12 and t["n_total"] == N_ROWS and 0.0 <= t["acc"] <= 1.0
    lora = [json.loads(x) for x in samples_path.read_text().splitlines()]
    assert [s["id"] for s in lora] == [s["id"] for s in base_samples[:12]]
    diffs = [abs(a - b) for s, r in zip(lora, base_samples)
             for a, b in zip(s["loglikelihoods"], r["loglikelihoods"])]
    assert max(diffs) > 1e-3  # the adapter was applied (B != 0 changes the model)


# --------------------------------------------------------------------------- errors

def test_error_missing_model_dir(tiny, tmp_path):
    with pytest.raises(ev.MissingInputError, match="model directory not found"):
        ev.evaluate(tmp_path / "nope", "world_mc", data=tiny["data"])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ev.evaluate(tmp_path, "world_mc", data=tiny["data"])
    (tmp_path / "config.json").write_text("{}")  # a model saved without its tokenizer
    with pytest.raises(ev.MissingInputError, match="no tokenizer in .*--tokenizer"):
        ev.evaluate(tmp_path, "world_mc", data=tiny["data"])


def test_error_missing_data(tiny, tmp_path):
    d = _write_data(tmp_path / "d", _rows(3))
    (d / "test.jsonl").unlink()
    with pytest.raises(ev.MissingInputError, match="test.jsonl"):
        ev.evaluate(tiny["model"], "world_mc", data=d)
    with pytest.raises(ev.EvalConfigError, match="need a data directory"):
        ev.evaluate(tiny["model"], "world_mc")
    with pytest.raises(ev.MissingInputError, match="data directory .* not found"):
        ev.evaluate(tiny["model"], "siqa_local", data=tmp_path / "missing")
    with pytest.raises(ev.EvalConfigError, match="no data directory given for task"):
        ev.evaluate(tiny["model"], "world_mc,siqa_local", data=f"world_mc={tiny['data']}")
    bad = _write_data(tmp_path / "bad", [{**_rows(1)[0], "label": 3}])
    with pytest.raises(ev.EvalConfigError, match="'label' must be an int"):
        ev.evaluate(tiny["model"], "world_mc", data=bad)


def test_error_unknown_task_lists_available(tiny):
    with pytest.raises(ev.EvalConfigError) as e:
        ev.split_tasks("world_mc,wrld_mc")
    msg = str(e.value)
    assert "'wrld_mc'" in msg and "siqa_local" in msg and "hellaswag" in msg
    assert ev.split_tasks("world_mc,piqa,world_mc") == (["world_mc"], ["piqa"])


def test_error_adapter_without_config(tiny, tmp_path):
    ad = tmp_path / "adapter"
    (ad / "my_adapter").mkdir(parents=True)
    (ad / "my_adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ev.EvalConfigError, match=r"no adapter_config.json.*my_adapter"):
        ev.evaluate(tiny["model"], "world_mc", data=tiny["data"], adapter=ad)
    with pytest.raises(ev.MissingInputError, match="adapter directory not found"):
        ev.evaluate(tiny["model"], "world_mc", data=tiny["data"], adapter=tmp_path / "x")


def test_error_vllm_not_installed_and_cli_exit_code(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ev_run, "find_spec", lambda name: None)
    with pytest.raises(ev.EvalConfigError, match="vllm is not installed"):
        ev.evaluate(tiny["model"], "world_mc", data=tiny["data"], backend="vllm")
    rc = ev.main(["--model", str(tmp_path / "nope"), "--tasks", "world_mc",
                  "--data", str(tiny["data"]), "--out", str(tmp_path / "eval.json")])
    assert rc == 2 and "model directory not found" in capsys.readouterr().err
    assert not (tmp_path / "eval.json").exists()


# --------------------------------------------------------------------------- vLLM's LoRA check
# vLLM itself is not installed here: hf stands in for it (tests/vllm runs the real one), with
# the log-likelihoods of its adapter runs moved by `shift`, as a vLLM whose LoRA prompt
# log-probs are off would report them.

def _vllm_stand_in(monkeypatch, shift: float = 0.0, fail: bool = False) -> list[tuple]:
    import dataclasses

    from grades.evaluate import lora_check

    real, calls = lora_check.run_lm_eval, []

    def run(model_dir, adapter_dir, names, std, data_dirs, opts, tokenizer=None, shipped=()):
        calls.append((opts.backend, adapter_dir is not None, opts.limit, Path(model_dir).name))
        if opts.backend == "vllm" and adapter_dir is not None and fail:
            raise ValueError("LoRA is not supported with prompt_logprobs")
        res, t = real(model_dir, adapter_dir, names, std, data_dirs,
                      dataclasses.replace(opts, backend="hf", device="cpu"), tokenizer=tokenizer, shipped=shipped)
        if opts.backend == "vllm" and adapter_dir is not None:
            for ss in res["samples"].values():
                for s in ss:
                    s["filtered_resps"] = [(r[0] + shift, r[1]) for r in s["filtered_resps"]]
        return res, t

    monkeypatch.setattr(ev_run, "find_spec", lambda name: object())
    monkeypatch.setattr(lora_check, "run_lm_eval", run)
    monkeypatch.setattr(ev_run, "run_lm_eval", run)
    return calls


def _vllm_lora_eval(tiny, tmp_path, **kw):
    out = ev.evaluate(tiny["model"], ["world_mc"], data=tiny["data"], adapter=tiny["adapter"], backend="vllm",
                      out=tmp_path / "eval.json", samples_out=tmp_path / "samples.jsonl", batch_size=8,
                      limit=10, threads=1, **kw)
    return out, [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_lora_check_agreement_keeps_the_adapter(tiny, tmp_path, monkeypatch):
    calls = _vllm_stand_in(monkeypatch, shift=1e-3)
    out, _ = _vllm_lora_eval(tiny, tmp_path, lora_check=4)
    # the hf reference on the first 4 documents (adapter through PEFT), then "vLLM" with the adapter
    assert calls == [("hf", True, 4, "model"), ("vllm", True, 10, "model")]
    c = out["lora_check"]
    assert out["lora"] == "adapter" and c["status"] == "agree" and c["action"] == "none"
    assert c["docs"] == 4 and c["requests"] == 12 and c["tolerance"] == 0.05
    assert c["max_abs_diff"] == pytest.approx(1e-3, abs=1e-6)
    assert json.loads((tmp_path / "eval.json").read_text())["lora_check"] == c


@pytest.mark.slow
def test_lora_check_disagreement_merges_and_says_so(tiny, tmp_path, monkeypatch, caplog):
    calls = _vllm_stand_in(monkeypatch, shift=0.7)
    with caplog.at_level("WARNING", logger="grades.evaluate"):
        out, samples = _vllm_lora_eval(tiny, tmp_path, lora_check=4)
    # reference, the adapter run (discarded), then the merged model without LoRA
    assert calls[:2] == [("hf", True, 4, "model"), ("vllm", True, 10, "model")]
    assert calls[2][:3] == ("vllm", False, 10) and calls[2][3] == "model" and len(calls) == 3
    c = out["lora_check"]
    assert out["lora"] == "merged" and out["adapter"] == str(tiny["adapter"].resolve())
    assert c["status"] == "disagree" and c["action"] == "merged"
    assert c["max_abs_diff"] == pytest.approx(0.7, abs=1e-4) and "discarded_lm_eval_time_s" in c
    assert "disagree with hf's" in caplog.text and "merged instead" in caplog.text
    # what is reported is the merged model's: the adapter's log-likelihoods, unshifted
    ref = ev.evaluate(tiny["model"], ["world_mc"], data=tiny["data"], adapter=tiny["adapter"], batch_size=8,
                      limit=10, threads=1, samples_out=tmp_path / "ref.jsonl")
    ref_samples = [json.loads(x) for x in (tmp_path / "ref.jsonl").read_text().splitlines()]
    assert max(abs(a - b) for s, r in zip(samples, ref_samples)
               for a, b in zip(s["loglikelihoods"], r["loglikelihoods"])) < 1e-4
    assert out["tasks"]["world_mc"]["acc"] == ref["tasks"]["world_mc"]["acc"]


@pytest.mark.slow
def test_lora_check_vllm_error_merges(tiny, tmp_path, monkeypatch, caplog):
    calls = _vllm_stand_in(monkeypatch, fail=True)
    with caplog.at_level("WARNING", logger="grades.evaluate"):
        out, _ = _vllm_lora_eval(tiny, tmp_path)
    assert [c[:2] for c in calls] == [("hf", True), ("vllm", True), ("vllm", False)]
    c = out["lora_check"]
    assert out["lora"] == "merged" and c["status"] == "error" and c["action"] == "merged"
    assert "prompt_logprobs" in c["error"] and "failed with the adapter" in caplog.text


@pytest.mark.slow
def test_lora_check_off_and_not_for_hf_or_merged(tiny, tmp_path, monkeypatch):
    calls = _vllm_stand_in(monkeypatch, shift=5.0)
    out, _ = _vllm_lora_eval(tiny, tmp_path, lora_check=0)
    assert calls == [("vllm", True, 10, "model")] and out["lora"] == "adapter" and "lora_check" not in out
    calls.clear()
    out, _ = _vllm_lora_eval(tiny, tmp_path, merge=True)
    assert [c[:2] for c in calls] == [("vllm", False)] and out["lora"] == "merged" and "lora_check" not in out
    assert ev.build_parser().parse_args(["--model", "m", "--tasks", "t"]).lora_check == 8
