"""config/paper.yaml: validates with the shipped schema, expands to every model x setting,
carries the paper's known thresholds, and turns into the right jobs (GPUs, launcher,
evaluation arguments, cluster resources)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import yaml

from grades import ConfigError
from grades import workflow as gw

ROOT = Path(__file__).resolve().parent.parent
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
SETTINGS = ["FP", "FP+ES", "FP+GradES", "LoRA", "LoRA+ES", "LoRA+GradES"]
HUB_IDS = {"qwen3-14b": "Qwen/Qwen3-14B", "phi-4": "microsoft/phi-4", "qwen3-0.6b": "Qwen/Qwen3-0.6B",
           "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct", "mistral-7b": "mistralai/Mistral-7B-Instruct-v0.3"}
VLMS = {"qwen2.5-vl-7b": ["FP", "FP+GradES", "LoRA", "LoRA+GradES"], "nanovlm": ["FP", "FP+GradES"]}
BENCHMARKS = ["boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "openbookqa", "arc_challenge", "arc_easy"]
PAPER_BENCHMARKS = ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "openbookqa", "arc_challenge", "arc_easy"]


def thresholds() -> dict[str, dict]:
    with open(ROOT / "results" / "paper" / "thresholds.csv") as f:
        return {r["setting"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def cfg():
    return gw.load(copy.deepcopy(PAPER))


def test_five_models_six_settings(cfg):
    runs = [r for r in gw.runs(cfg) if r.model in HUB_IDS]
    assert len(runs) == 30
    assert {r.model for r in gw.runs(cfg)} == set(HUB_IDS) | set(VLMS)
    for m, hub_id in HUB_IDS.items():
        assert cfg["models"][m]["source"] == f"hf:{hub_id}"
        assert [r.setting for r in runs if r.model == m] == SETTINGS
    d = cfg["datasets"]["commonsense-170k"]
    # the commonsense generation tasks (the paper's protocol, an assumption), then lm-eval's own tasks
    scored = [f"cs_{b}" for b in PAPER_BENCHMARKS] + BENCHMARKS
    assert d["source"] == "hf-dataset:zwhe99/commonsense_170k" and d["lm_eval_tasks"] == scored
    assert d["eval_tasks"] == [] and gw.eval_tasks(cfg, "qwen3-14b") == scored


def test_optional_qwen3_sizes_group(cfg):
    on = gw.load({**copy.deepcopy(PAPER), "groups": ["qwen3-sizes"]})
    extra = {r.model for r in gw.runs(on)} - {r.model for r in gw.runs(cfg)}
    assert extra == {"qwen3-1.7b", "qwen3-4b", "qwen3-8b"} and len(gw.runs(on)) == 48 + 6  # + the VLMs
    assert on["models"]["qwen3-8b"]["source"] == "hf:Qwen/Qwen3-8B"
    with pytest.raises(ConfigError, match="did you mean 'qwen3-sizes'"):
        gw.load({**copy.deepcopy(PAPER), "groups": ["qwen3-size"]})


def test_known_thresholds_come_from_the_paper(cfg):
    t = thresholds()
    fp = gw.run_config(cfg, gw.PlannedRun("llama-3.1-8b", "FP+GradES", 0), "m", "d")
    assert fp["method"]["tau"] == float(t["readme_llm_fft"]["tau"]) and fp["method"]["alpha"] == float(
        t["readme_llm_fft"]["alpha"])
    assert fp["method"]["signal"] == "weight_delta_l1"  # the criterion those taus were published for
    lora = gw.run_config(cfg, gw.PlannedRun("mistral-7b", "LoRA+GradES", 0), "m", "d")
    assert lora["method"]["tau"] == float(t["readme_llm_lora"]["tau"])
    q14 = gw.run_config(cfg, gw.PlannedRun("qwen3-14b", "LoRA+GradES", 0), "m", "d")
    assert q14["method"]["tau"] == float(t["readme_first_version"]["tau"])
    q06 = gw.run_config(cfg, gw.PlannedRun("qwen3-0.6b", "LoRA+GradES", 0), "m", "d")
    assert q06["method"]["tau"] == float(t["paper_figure1"]["tau"]) and q06["method"]["signal"] == "grad_l1"
    # VLM thresholds: one per tower, the single tau of the language models dropped
    lq = gw.run_config(cfg, gw.PlannedRun("qwen2.5-vl-7b", "LoRA+GradES", 0), "m", "d")["method"]
    row = t["readme_vlm_lora"]
    assert (lq["vision_tau"], lq["language_tau"], lq["alpha"], lq["tau"]) == (
        float(row["vision_tau"]), float(row["language_tau"]), float(row["alpha"]), None)
    fq = gw.run_config(cfg, gw.PlannedRun("qwen2.5-vl-7b", "FP+GradES", 0), "m", "d")["method"]
    row = t["readme_vlm_fft"]
    assert (fq["vision_tau"], fq["language_tau"], fq["alpha"]) == (
        float(row["vision_tau"]), float(row["language_tau"]), float(row["alpha"]))
    n = gw.run_config(cfg, gw.PlannedRun("nanovlm", "FP+GradES", 0), "m", "d")["method"]
    row = t["nanovlm_readme_table10"]
    assert (n["vision_tau"], n["language_tau"], n["alpha"], n["check_interval"], n["signal"]) == (
        float(row["vision_tau"]), float(row["language_tau"]), float(row["alpha"]), int(row["compute_interval"]),
        "weight_delta_l1")


def test_vlm_experiments_expand_into_runs(cfg):
    for m, settings in VLMS.items():
        assert [r.setting for r in gw.runs(cfg) if r.model == m] == settings
        assert gw.is_vlm(cfg, m) and cfg["models"][m]["gpus"] == {"qwen2.5-vl-7b": 4, "nanovlm": 1}[m]
    assert cfg["models"]["qwen2.5-vl-7b"]["source"] == "hf:Qwen/Qwen2.5-VL-7B-Instruct"
    assert gw.eval_tasks(cfg, "qwen2.5-vl-7b") == ["gqa", "vqav2", "coco_caption"]
    assert gw.eval_tasks(cfg, "nanovlm") == [f"mmstar_{c}" for c in (
        "coarse_perception", "fine_grained_perception", "instance_reasoning", "logical_reasoning", "math",
        "science_technology")]
    # the paper README's Qwen2.5-VL recipe: LoRA r 128 / alpha 256 on both towers, lr 1e-4, batch 1
    lora = gw.run_config(cfg, gw.PlannedRun("qwen2.5-vl-7b", "LoRA", 0), "m", "d")
    assert (lora["lora"]["r"], lora["lora"]["alpha"], lora["lora"]["targets"]) == (128, 256, ["@language", "@vision"])
    assert lora["optim"]["lr"] == 1.0e-4 and lora["batch_size"] == 1 and lora["grad_accum"] == 1
    assert lora["data"]["prompt"] == "chat" and lora["data"]["encode"] == "lazy"
    fp = gw.run_config(cfg, gw.PlannedRun("qwen2.5-vl-7b", "FP", 0), "m", "d")
    assert fp["optim"]["lr"] == 2.0e-5 and fp["model"]["dtype"] == "bfloat16"
    nano = gw.run_config(cfg, gw.PlannedRun("nanovlm", "FP", 0), "m", "d")
    assert "prompt" not in nano["data"] and nano["data"]["encode"] == "lazy"  # plain prompts, the default
    src = cfg["models"]["nanovlm"]
    assert src["source"] == "compose-vlm:idefics3" and src["options"]["language"] == "hf:HuggingFaceTB/SmolLM2-135M"
    # the paper tables map both
    assert cfg["report"]["paper_models"]["qwen2.5-vl-7b"] == "Qwen2.5-VL-7B"
    assert cfg["report"]["paper_models"]["nanovlm"] == "nanoVLM"


def test_vlm_evaluation_arguments(cfg):
    # vllm-vlm on the cluster; the instruct model in its chat format (it is fine-tuned in it)
    assert gw.vlm_eval_args(cfg, "qwen2.5-vl-7b") == (
        "--task gqa,vqav2,coco_caption --batch-size 32 --dtype bfloat16 --backend vllm "
        "--apply-chat-template --tensor-parallel-size 4 --gpu-memory-utilization 0.85 --max-model-len 2048")
    assert "--apply-chat-template" not in gw.vlm_eval_args(cfg, "nanovlm")
    hf = gw.load({**copy.deepcopy(PAPER), "eval": {**PAPER["eval"], "backend": "hf"}})
    assert gw.vlm_eval_args(hf, "nanovlm").endswith("--dtype bfloat16 --device cuda")


def test_bad_vlm_entries_name_the_field():
    bad = copy.deepcopy(PAPER)
    bad["datasets"]["cauldron"]["lm_eval_tasks"][0] = "mmstar_coarse_perceptoin"
    with pytest.raises(ConfigError, match="datasets.cauldron.lm_eval_tasks.*did you mean 'mmstar_coarse_perception'"):
        gw.load(bad)
    bad = copy.deepcopy(PAPER)
    bad["models"]["nanovlm"]["settings"]["FP+GradES"]["method"]["visoin_tau"] = 1.0
    with pytest.raises(ConfigError, match="nanovlm.*FP\\+GradES.*visoin_tau"):
        gw.load(bad)
    bad = copy.deepcopy(PAPER)
    bad["models"]["nanovlm"]["options"]["language"] = "HuggingFaceTB/SmolLM2-135M"
    with pytest.raises(ConfigError, match="models.nanovlm.options.language.*hf:ORG/NAME"):
        gw.load(bad)
    bad = copy.deepcopy(PAPER)
    bad["datasets"]["cauldron"]["options"]["subsets"] = "vqav2"
    with pytest.raises(ConfigError, match="datasets.cauldron.options.subsets.*expected a list"):
        gw.load(bad)


def test_run_configs_for_the_gpu_cluster(cfg):
    rc = gw.run_config(cfg, gw.PlannedRun("phi-4", "LoRA", 0), "m", "d")
    assert rc["lora"]["targets"] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]  # Phi-3 fused projections
    assert rc["model"]["dtype"] == "bfloat16" and rc["device"] == "auto" and rc["optim"]["lr"] == 2.0e-4
    fp = gw.run_config(cfg, gw.PlannedRun("qwen3-14b", "FP", 0), "m", "d")
    assert fp["optim"]["lr"] == 2.0e-5 and fp["steps"] == 3500 and fp["seq_len"] == 256
    # the VLM-only data fields have no schema default: a language model's run.yaml does not change
    assert "prompt" not in fp["data"] and "encode" not in fp["data"]
    assert fp["lora"]["targets"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_job_resources_scale_with_model_size(cfg):
    big = gw.job_resources(cfg, "qwen3-14b", "train")
    small = gw.job_resources(cfg, "qwen3-0.6b", "train")
    assert big["gpu"] == 4 and small["gpu"] == 1
    assert big["nodes"] == small["nodes"] == 1 and big["slurm_extra"] == "" and big["tasks"] == 0  # one node
    assert big["cpus"] == 32 and small["cpus"] == 8  # cpus_per_gpu 8
    assert big["mem_mb"] == 32000 + 2500 * 14.8 * 4 and small["mem_mb"] == 32000 + 2500 * 0.6
    assert big["runtime"] == 1068 and small["runtime"] == 216  # minutes: 180 + 60 per billion
    assert small["runtime"] < big["runtime"]
    ev = gw.job_resources(cfg, "qwen3-14b", "evaluate")
    # vLLM's tensor parallelism over the 4 GPUs of the model's node (40 query, 8 key/value heads)
    assert ev["gpu"] == 4 and ev["nodes"] == 1 and ev["mem_mb"] == 76400  # 32000 + 3000 * 14.8: one process
    assert gw.job_resources(cfg, "phi-4", "evaluate")["gpu"] == 2  # 10 key/value heads: 4 does not split them
    assert gw.job_resources(cfg, "qwen3-14b", "prepare")["gpu"] == 0
    over = copy.deepcopy(PAPER)
    over["models"]["qwen3-14b"]["resources"] = {"train": {"runtime": 2000, "gpu": 8}}
    o = gw.job_resources(gw.load(over), "qwen3-14b", "train")
    assert o["runtime"] == 2000 and o["gpu"] == 8 and o["mem_mb"] == big["mem_mb"]


def test_launcher_for_multi_gpu_models(cfg):
    assert gw.train_launcher(cfg, "qwen3-0.6b", "/usr/bin/python3") == "/usr/bin/python3 -m grades.train"
    assert gw.train_launcher(cfg, "qwen3-14b", "/opt/py env/python") == (
        "'/opt/py env/python' -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node 4 -m grades.train")
    acc = gw.load({**copy.deepcopy(PAPER), "launcher": {"name": "accelerate", "args": "--main_process_port 0"}})
    assert gw.train_launcher(acc, "mistral-7b", "py") == (
        "py -m accelerate.commands.launch --num_processes 2 --num_machines 1 --main_process_port 0 --module grades.train")


def test_eval_arguments_per_backend(cfg):
    assert gw.eval_args(cfg, "qwen3-14b") == (
        "--backend vllm --batch-size 32 --dtype bfloat16 --num-fewshot 0 --seed 0 "
        "--tensor-parallel-size 4 --gpu-memory-utilization 0.85 --max-model-len 2048")
    hf = gw.load({**copy.deepcopy(PAPER), "eval": {**PAPER["eval"], "backend": "hf", "lora": "merged"}})
    assert gw.eval_args(hf, "qwen3-14b") == (
        "--backend hf --batch-size 32 --dtype bfloat16 --num-fewshot 0 --seed 0 --merge-adapter --device cuda")


def test_unknown_values_are_marked_as_assumptions():
    text = (ROOT / "config" / "paper.yaml").read_text()
    assert text.count("# assumption") >= 12
    for needle in ("steps: 3500", "num_fewshot: 0", "llama-3.1-8b:", "mistral-7b:", "zwhe99/commonsense_170k"):
        block = text[text.index(needle) - 600: text.index(needle) + 200]
        assert "assumption" in block, needle


def test_other_profiles_unchanged():
    for name in ("config.yaml", "smoke.yaml"):
        c = gw.load(yaml.safe_load((ROOT / "config" / name).read_text()))
        assert c["groups"] == [] and all(mc["gpus"] == 0 for mc in c["models"].values())
        for m in c["models"]:
            assert gw.train_launcher(c, m, "py") == "py -m grades.train"
            assert gw.job_resources(c, m, "train")["gpu"] == 0
            assert "--backend hf" in gw.eval_args(c, m) and "--device cpu" in gw.eval_args(c, m)


def test_training_precision_and_grades_state_for_the_cluster(cfg):
    for run in gw.runs(cfg):
        rc = gw.run_config(cfg, run, "m", "d")
        assert rc["precision"] == "bf16-mixed" and "autocast" not in rc  # fp32 masters, bfloat16 compute
        m = rc["method"]
        if run.setting == "FP+GradES":  # the weight snapshot sampled, not a full fp32 copy of every matrix
            assert m["signal"] == "weight_delta_l1" and m["sample_fraction"] == 0.01
    fp = gw.run_config(cfg, gw.PlannedRun("qwen3-14b", "FP", 0), "m", "d")
    assert fp["gradient_checkpointing"] is True


@pytest.mark.slow  # the memory plan of every run (about 10 s)
def test_every_paper_run_fits_its_gpus(cfg):
    fits = gw.check_memory(cfg)  # raises when one does not
    assert len(fits) == len(set(gw.runs(cfg) + gw.compare_runs(cfg))) and all(f.ok for f in fits)
    by = {f.estimate.name: f.estimate for f in fits}
    assert by["qwen3-14b/fp/seed0"].strategy == "fsdp" and by["qwen3-14b/fp/seed0"].gpus == 4
    text, ok = gw.plan_text(cfg)
    assert ok and "qwen3-14b/fp-grades/seed0" in text and "GPU: 80 GiB" in text


@pytest.mark.slow  # the memory plan of every run (about 10 s)
def test_the_memory_plan_refuses_14b_full_fine_tuning_on_one_gpu():
    one = copy.deepcopy(PAPER)
    one["models"]["qwen3-14b"]["gpus"] = 1
    with pytest.raises(ConfigError, match=r"qwen3-14b/fp/seed0: .* on 1 GPU\(s\).*would fit with: 4 GPUs"):
        gw.check_memory(gw.load(one))
    text, ok = gw.plan_text(gw.load(one))
    assert not ok and "qwen3-14b/fp/seed0" in text


@pytest.mark.slow  # the memory plan of every run (about 10 s)
def test_plan_and_check_commands(tmp_path, capsys):
    from grades.workflow.__main__ import main

    one = copy.deepcopy(PAPER)
    one["models"]["qwen3-14b"]["gpus"] = 1
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(one))
    assert main(["plan", str(path)]) == 1
    out = capsys.readouterr()
    assert "qwen3-14b/fp/seed0" in out.out and "would fit with: 4 GPUs" in out.out
    assert main(["check", str(path)]) == 2 and "cannot fit" in capsys.readouterr().err
    assert main(["plan", str(ROOT / "config" / "smoke.yaml")]) == 0
    assert "nothing to plan" in capsys.readouterr().out


def test_a_model_larger_than_a_node_spans_nodes():
    big = copy.deepcopy(PAPER)
    big["models"]["qwen3-14b"]["gpus"] = 8  # jobs.gpus_per_node: 4
    c = gw.load(big)
    res = gw.job_resources(c, "qwen3-14b", "train")
    assert (res["gpu"], res["nodes"], res["tasks"], res["slurm_extra"]) == (0, 2, 2, "--gpus-per-node=4")
    assert res["cpus"] == 32 and res["mem_mb"] == 32000 + 2500 * 14.8 * 4  # per node
    cmd = gw.train_launcher(c, "qwen3-14b", "py")
    assert cmd.startswith("srun --nodes 2 --ntasks-per-node 1 py -m torch.distributed.run --nnodes 2 "
                          "--nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint ")
    assert '$SLURM_JOB_NODELIST' in cmd and '--rdzv_id "$SLURM_JOB_ID"' in cmd and "--standalone" not in cmd
    big["models"]["qwen3-14b"]["gpus"] = 6
    with pytest.raises(ConfigError, match="use a multiple of 4"):
        gw.train_launcher(gw.load(big), "qwen3-14b", "py")

