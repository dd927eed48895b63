"""Snakemake profiles and the prefetch step, as far as a machine without SLURM, GPUs or
the Hub allows: dry runs of the real workflow, and the prefetch plan and calls."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grades import prefetch as pf
from grades import workflow as gw

ROOT = Path(__file__).resolve().parent.parent
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
MODELS = ["qwen3-14b", "phi-4", "qwen3-0.6b", "llama-3.1-8b", "mistral-7b"]
SLUGS = ["fp", "fp-es", "fp-grades", "lora", "lora-es", "lora-grades"]


def job_stats(out: str) -> dict[str, int]:
    block = out[out.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


def dry_run(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_slurm_profile_plans_a_train_and_an_eval_job_per_model_and_setting():
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install 'grades-harness[slurm]'")
    out = dry_run("--configfile", "config/paper.yaml", "--profile", "workflow/profiles/slurm", "all", "prefetch")
    stats = job_stats(out)
    # five language models x six settings, Qwen2.5-VL-7B x four, nanoVLM x two
    assert stats["train"] == stats["run_config"] == 36 and stats["evaluate"] == 30 and stats["evaluate_vlm"] == 6
    assert stats["evaluate_base"] == 5 and stats["evaluate_vlm_base"] == 2 and stats["prepare_model"] == 7
    assert stats["prepare_data"] == 3 and stats["multimodal"] == 1
    assert stats["prefetch"] == 1 and stats["total"] == 130  # + tables, figures, all
    for m in MODELS:
        for s in SLUGS:
            assert f"results/runs/paper/{m}/{s}/seed0/train.json" in out
            assert f"results/runs/paper/{m}/{s}/seed0/eval.json" in out
    assert "results/runs/paper/qwen3-8b" not in out and "cache/paper/models/qwen3-8b" not in out  # group off
    # the 14B models train on 4 GPUs through torchrun, with their resources
    cmds = [ln for ln in out.splitlines() if " -m grades.train " in ln]
    torchrun = [c for c in cmds if "torch.distributed.run" in c]
    # 14B x2 and Llama 8B (4 GPUs), Mistral 7B (2 GPUs), Qwen2.5-VL-7B (4 GPUs, 4 settings); 0.6B and nanoVLM plain
    assert len(cmds) == 36 and len(torchrun) == 28
    # the VLMs: scored by grades.vlm on vllm-vlm, on a GPU partition; a LoRA run hands over its adapter
    vlm_eval = next(b for b in out.split("\nrule ") if b.startswith("evaluate_vlm:")
                    and "wildcards: model=qwen2.5-vl-7b, setting=lora-grades, seed=0" in b)
    assert "slurm_partition=gpu" in re.search(r"resources: (.*)", vlm_eval)[1]
    assert ("-m grades.vlm evaluate --model cache/paper/models/qwen2.5-vl-7b --adapter "
            "results/runs/paper/qwen2.5-vl-7b/lora-grades/seed0/adapter") in vlm_eval
    assert "--task gqa,vqav2,coco_caption" in vlm_eval and "--backend vllm --apply-chat-template" in vlm_eval
    nano = next(b for b in out.split("\nrule ") if b.startswith("evaluate_vlm:") and "model=nanovlm, setting=fp," in b)
    assert "--model results/runs/paper/nanovlm/fp/seed0/model" in nano and "mmstar_science_technology" in nano
    assert all("--nproc_per_node 4" in c for c in torchrun if "/qwen3-14b/" in c or "/phi-4/" in c)
    block = next(b for b in out.split("\nrule ") if b.startswith("train:")
                 and "wildcards: model=qwen3-14b, setting=fp, seed=0" in b)
    res = re.search(r"resources: (.*)", block)[1]
    assert "gpu=4" in res and "nodes=1" in res and "mem_mb=180000" in res and "runtime=1068" in res
    assert "cpus_per_task=32" in res and "slurm_partition=gpu" in res
    assert "--backend vllm" in out and "--set threads=32" in out
    prep = next(b for b in out.split("\nrule ") if b.startswith("prepare_model:") and "model=qwen3-14b" in b)
    res = re.search(r"resources: (.*)", prep)[1]
    assert "cpus_per_task=4" in res and "gpu=" not in res and "slurm_partition=cpu" in res


@pytest.mark.slow
def test_default_profile_runs_the_smoke_profile_locally(tmp_path):
    # in a scratch directory: the plan must not depend on results already in the checkout
    out = dry_run("--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                  str(ROOT / "config" / "smoke.yaml"), "--profile", str(ROOT / "workflow" / "profiles" / "default"))
    stats = job_stats(out)
    # the tiny language model and the tiny VLM, four settings each; the VLM is scored by grades.vlm
    assert stats["train"] == 8 and stats["evaluate"] == stats["evaluate_vlm"] == 4 and "prefetch" not in stats
    assert "torch.distributed.run" not in out and "gpu=0" in out


@pytest.mark.slow
def test_seeds_overlay_runs_every_setting_with_three_seeds(tmp_path):
    """config/seeds.yaml after a profile: three seeds of every run, and the tables pass the claims' options."""
    cfg = copy.deepcopy(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()))
    cfg.update(yaml.safe_load((ROOT / "config" / "seeds.yaml").read_text()))  # Snakemake's merge of --configfile
    assert sorted({r.seed for r in gw.runs(gw.load(cfg))}) == [0, 1, 2]
    out = dry_run("--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                  str(ROOT / "config" / "smoke.yaml"), str(ROOT / "config" / "seeds.yaml"), "-p", "tables")
    stats = job_stats(out)
    assert stats["train"] == 8 * 3  # two models, four settings, three seeds
    assert "results/runs/smoke/tiny-qwen3/lora-grades/seed2/train.json" in out
    tables = next(ln for ln in out.splitlines() if " -m grades.report tables " in ln)
    assert "--margin 1 --bootstrap-seed 0" in tables and "--paired-baseline" not in tables


# ------------------------------------------------------------------ prefetch
def fake_tasks(tasks):
    table = {"boolq": ("aps/super_glue", "boolq"), "piqa": ("baber/piqa", None),
             "social_iqa": ("lighteval/siqa", None), "hellaswag": ("Rowan/hellaswag", None),
             "winogrande": ("allenai/winogrande", "winogrande_xl"), "openbookqa": ("allenai/openbookqa", "main"),
             "arc_easy": ("allenai/ai2_arc", "ARC-Easy"), "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge")}
    hub = [t for t in tasks if t not in table]  # the VLM benchmarks: our own YAMLs, read for real
    return {**{t: [{"path": table[t][0], "name": table[t][1], "kwargs": {}, "split": None}] for t in tasks
               if t in table}, **(pf.lm_eval_task_datasets(hub) if hub else {})}


@pytest.mark.slow
def test_plan_lists_every_hub_download_once():
    cfg = gw.load(copy.deepcopy(PAPER))
    items = pf.plan(cfg, task_datasets=fake_tasks)
    models = [i.id for i in items if i.kind == "model"]
    assert sorted(models) == sorted(["Qwen/Qwen3-14B", "microsoft/phi-4", "Qwen/Qwen3-0.6B",
                                     "meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3",
                                     "Qwen/Qwen2.5-VL-7B-Instruct", "google/siglip-base-patch16-224",
                                     "HuggingFaceTB/SmolLM2-135M"])
    siglip = next(i for i in items if i.id == "google/siglip-base-patch16-224")
    assert siglip.used_by == ("models.nanovlm.options.vision",)
    data = [(i.id, i.name, i.split) for i in items if i.kind == "dataset"]
    # one load per Cauldron sub-collection: vqav2 and textcaps are shared by both VLMs' training sets
    cauldron = PAPER["datasets"]["cauldron"]["options"]["subsets"]
    assert ("zwhe99/commonsense_170k", None, "train") in data and len(data) == 1 + len(cauldron)
    assert {n for i, n, _ in data if i == "HuggingFaceM4/the_cauldron"} == set(cauldron) | {"vqav2", "textcaps"}
    vq = next(i for i in items if i.kind == "dataset" and i.name == "vqav2")
    assert vq.used_by == ("datasets.cauldron", "datasets.cauldron-vqa")
    lm = [(i.id, i.name, i.split) for i in items if i.kind == "lm-eval"]
    assert ("allenai/ai2_arc", "ARC-Challenge", None) in lm and ("aps/super_glue", "boolq", None) in lm
    # both protocols read the same Hub copies: one download serves cs_arc_challenge and arc_challenge
    arc = next(i for i in items if i.kind == "lm-eval" and i.name == "ARC-Challenge")
    assert arc.used_by == ("lm-eval:arc_challenge", "lm-eval:cs_arc_challenge")
    # the VLM benchmarks of evals/tasks/hub, GQA's pictures (metadata.extra_datasets) included; the six
    # MMStar categories read one dataset
    text_only = {"aps/super_glue", "baber/piqa", "lighteval/siqa", "Rowan/hellaswag", "allenai/winogrande",
                 "allenai/openbookqa", "allenai/ai2_arc"}
    assert {x for x in lm if x[0] not in text_only} == {
        ("lmms-lab/GQA", "testdev_balanced_instructions", None), ("lmms-lab/GQA", "testdev_balanced_images", "testdev"),
        ("lmms-lab/VQAv2", None, None), ("lmms-lab/COCO-Caption2017", None, None), ("Lin-Chen/MMStar", None, None)}
    mm = next(i for i in items if i.id == "Lin-Chen/MMStar")
    assert len(mm.used_by) == 6 and "lm-eval:mmstar_math" in mm.used_by
    q = next(i for i in items if i.id == "Qwen/Qwen3-14B")
    assert q.used_by == ("models.qwen3-14b",)
    # groups and the vlm switch: without the VLMs, nothing only they use
    on = pf.plan(gw.load({**copy.deepcopy(PAPER), "groups": ["qwen3-sizes"]}), include_vlm=False,
                 task_datasets=fake_tasks)
    ids = {i.id for i in on}
    assert {"Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B"} <= ids
    assert not ids & {"lmms-lab/GQA", "HuggingFaceM4/the_cauldron", "Qwen/Qwen2.5-VL-7B-Instruct",
                      "HuggingFaceTB/SmolLM2-135M"}
    # profiles without Hub sources need nothing
    smoke = gw.load(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()))
    assert pf.plan(smoke, task_datasets=fake_tasks) == []


def test_task_datasets_come_from_lm_eval_yaml():
    got = pf.lm_eval_task_datasets(["boolq", "arc_challenge", "social_iqa", "gqa"])
    assert got["arc_challenge"][0]["path"] == "allenai/ai2_arc" and got["arc_challenge"][0]["name"] == "ARC-Challenge"
    assert got["boolq"][0]["name"] == "boolq" and got["social_iqa"][0]["path"] and len(got["boolq"]) == 1
    # ours (evals/tasks/hub): the questions, then the pictures GQA joins them with
    assert [(d["path"], d["name"]) for d in got["gqa"]] == [("lmms-lab/GQA", "testdev_balanced_instructions"),
                                                           ("lmms-lab/GQA", "testdev_balanced_images")]


def test_fetch_calls_and_manifest(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    calls = []

    def snapshot_download(repo_id, **kw):
        calls.append(("snapshot", repo_id, kw))
        d = tmp_path / "hub" / repo_id.replace("/", "--") / "snapshots" / "0123abc"
        d.mkdir(parents=True, exist_ok=True)
        return str(d)

    def load_dataset(path, **kw):
        calls.append(("load_dataset", path, kw))
        return datasets.Dataset.from_list([{"x": 1}, {"x": 2}])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    items = [pf.Item("model", "Qwen/Qwen3-0.6B", revision="abc", used_by=("models.q",)),
             pf.Item("dataset", "zwhe99/commonsense_170k", split="train"),
             pf.Item("lm-eval", "allenai/ai2_arc", name="ARC-Easy"),
             pf.Item("lm-eval", "lmms-lab/GQA", name="testdev_balanced_images", split="testdev")]
    man = pf.fetch(items, tmp_path / "prefetch.json", log=lambda s: None)
    assert calls[0] == ("snapshot", "Qwen/Qwen3-0.6B", {"revision": "abc", "ignore_patterns": pf.MODEL_IGNORE})
    assert calls[1] == ("load_dataset", "zwhe99/commonsense_170k", {"split": "train"})
    assert calls[2] == ("load_dataset", "allenai/ai2_arc", {"name": "ARC-Easy"})
    assert calls[3] == ("load_dataset", "lmms-lab/GQA", {"name": "testdev_balanced_images", "split": "testdev"})
    disk = json.loads((tmp_path / "prefetch.json").read_text())
    assert disk == json.loads(json.dumps(man)) and [r["status"] for r in disk["items"]] == ["ok"] * 4
    assert disk["items"][0]["resolved_revision"] == "0123abc" and disk["items"][1]["rows"] == 2
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "0"  # the prefetch process itself goes online

    def broken(path, **kw):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(RuntimeError, match="zwhe99/commonsense_170k failed: ConnectionError"):
        pf.fetch(items, tmp_path / "p2.json", log=lambda s: None)
    failed = json.loads((tmp_path / "p2.json").read_text())["items"]
    assert [r["status"] for r in failed] == ["ok", "failed"]


@pytest.mark.slow
def test_cli_dry_run_downloads_nothing(tmp_path):
    r = subprocess.run([sys.executable, "-m", "grades.prefetch", "--workflow-config", "config/paper.yaml",
                        "--dry-run", "--no-vlm", "--out", str(tmp_path / "m.json")], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("14 downloads (5 model, 1 dataset, 8 lm-eval); dry run")
    assert any(ln.startswith("model       meta-llama/Llama-3.1-8B-Instruct") for ln in lines)
    assert not (tmp_path / "m.json").exists()
    bad = subprocess.run([sys.executable, "-m", "grades.prefetch", "--workflow-config", "config/paper.yaml",
                          "--dry-run", "--only", "modles"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "unknown kind" in bad.stderr


def test_hf_model_prepared_as_links_into_the_prefetched_cache(tmp_path, monkeypatch):
    import huggingface_hub

    from grades.fetch import FetchError
    from grades.models import prepare_model

    snap = tmp_path / "hub" / "models--Org--M" / "snapshots" / "0123abc"
    (snap / "sub").mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap / "model-00001-of-00001.safetensors").write_bytes(b"w" * 10)
    (snap / "sub" / "extra.txt").write_text("x")
    calls = []

    def snapshot_download(repo_id, revision=None, local_files_only=False, **kw):
        calls.append((repo_id, revision, local_files_only))
        if repo_id != "Org/M":
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    out = prepare_model("hf:Org/M", tmp_path / "m", link=True)
    assert calls == [("Org/M", None, True)]  # the cache only, never the network
    assert (out / "config.json").is_symlink() and (out / "sub" / "extra.txt").resolve() == snap / "sub" / "extra.txt"
    info = json.loads((out / "grades_model.json").read_text())
    assert info["linked_files"] == 3 and info["hub_id"] == "Org/M" and info["snapshot"] == str(snap)
    with pytest.raises(FetchError, match="run the prefetch step first"):
        prepare_model("hf:Org/Other", tmp_path / "o", link=True)
    assert not (tmp_path / "o").exists()
