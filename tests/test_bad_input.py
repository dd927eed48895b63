"""Bad input as a hostile but ordinary user gives it: refused before any work, naming the field
or FILE:LINE, with a hint; exit code 2 and no traceback from the command lines.

Kinds: config files (missing, a directory, empty, a list, not UTF-8, YAML errors, duplicate
keys), names that become paths, numbers that are not numbers, silent rewrites (duplicates,
misspelt references), ``--set`` and ``--out`` mistakes, data files. The run directory's
lock, writability and leftovers: tests/test_rundir_lock.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from grades import ConfigError
from grades import workflow as gw
from grades.yamlfile import parse_yaml, read_yaml

ROOT = Path(__file__).resolve().parent.parent
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
M = "tiny-qwen3"
GOOD_RUN = {"name": "ok", "model": {"source": "tiny:qwen3"}, "data": {"source": "synthetic:world-mc"},
            "mode": "lora", "method": {"name": "grades", "tau": 1.0}, "steps": 10, "batch_size": 4, "seq_len": 64}


def refused(fn, *words):
    with pytest.raises(ConfigError) as e:
        fn()
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in message: {msg}"
    return msg


# ------------------------------------------------------------------ config files
YAML_BAD = [
    ("dup-top", "steps: 10\nname: x\nsteps: 20\n", ["f.yaml:3", "'steps'", "twice", "line 1"]),
    ("dup-nested", "optim:\n  lr: 1.0e-3\n  name: adamw\n  lr: 2.0e-3\n", ["f.yaml:4", "'lr'", "line 2"]),
    ("dup-flow", "method: {name: grades, tau: 1, tau: 2}\n", ["f.yaml:1", "'tau'"]),
    ("dup-model-key", "models:\n  a: {source: x}\n  a: {source: y}\n", ["f.yaml:3", "'a'"]),
    ("unclosed", "models: {a: {source: x}\nsteps: 1\n", ["f.yaml:", "not valid YAML", "started at line 1"]),
    ("tab", "optim:\n\tlr: 1\n", ["f.yaml:2", "tabs"]),
    ("bad-indent", "a:\n  b: 1\n c: 2\n", ["f.yaml:3", "not valid YAML"]),
    ("colon-in-value", "name: a: b\n", ["f.yaml:1", "not valid YAML"]),
]


@pytest.mark.parametrize("text,words", [(t, w) for _, t, w in YAML_BAD], ids=[i for i, _, _ in YAML_BAD])
def test_yaml_errors_name_file_and_line(text, words):
    refused(lambda: parse_yaml(text, "f.yaml"), *words)


def test_yaml_merge_keys_and_anchors_are_no_duplicates():
    doc = parse_yaml("base: &b {steps: 5, lr: 1}\nrun:\n  <<: *b\n  steps: 9\n")
    assert doc["run"] == {"steps": 9, "lr": 1}


@pytest.mark.parametrize("content,words", [
    (None, ["no such file"]),
    ("", ["is empty"]),
    ("# only a comment\n", ["is empty"]),
    ("- a\n- b\n", ["top level is a list", "not a mapping"]),
    ("just text\n", ["top level is a str"]),
    (b"name: caf\xe9\n", [":1:10", "0xe9", "UTF-8"]),
    ("dir", ["is a directory"]),
], ids=["missing", "empty", "comment-only", "list", "scalar", "latin-1", "directory"])
def test_config_file_refusals(tmp_path, content, words):
    p = tmp_path / "cfg.yaml"
    if content == "dir":
        p.mkdir()
    elif isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content)
    refused(lambda: read_yaml(p), *words)


# ------------------------------------------------------------------ the command lines
def _train(tmp_path, capsys, text: str | None, *extra: str, out: str | None = None) -> str:
    from grades.train import main

    cfg = tmp_path / "run.yaml"
    if text is not None:
        cfg.write_text(text)
    out = out if out is not None else str(tmp_path / "run")
    assert main(["--config", str(cfg), "--out", out, "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


GOOD_TEXT = yaml.safe_dump(GOOD_RUN)
TRAIN_BAD = [
    # (run.yaml text, extra args, words)
    (GOOD_TEXT + "steps: 20\n", [], ["run.yaml:", "'steps'", "twice"]),
    ("name: [x\n", [], ["run.yaml:", "not valid YAML"]),
    ("", [], ["is empty"]),
    ("- 1\n", [], ["not a mapping"]),
    (None, [], ["no such file"]),
    (GOOD_TEXT, ["--set", "steps"], ["--set 'steps'", "KEY=VALUE"]),
    (GOOD_TEXT, ["--set", "steps.a.b=1"], ["'steps' is 10, not a mapping"]),
    (GOOD_TEXT, ["--set", "=1"], ["not a dotted key"]),
    (GOOD_TEXT, ["--set", "optim.lr=nan"], ["optim.lr = nan", "finite"]),
    (GOOD_TEXT, ["--set", "optim.lr=inf"], ["optim.lr = inf", "finite"]),
    (GOOD_TEXT, ["--set", "optim.lr=-.inf"], ["optim.lr = -inf"]),
    (GOOD_TEXT, ["--set", "schedule.warmup_ratio=.nan"], ["schedule.warmup_ratio = nan"]),
    (GOOD_TEXT, ["--set", "method.tau=nan"], ["method.tau = nan"]),
    (GOOD_TEXT, ["--set", "optim.max_grad_norm=-1"], ["optim.max_grad_norm = -1", "out of range"]),
    (GOOD_TEXT, ["--set", "steps=-5"], ["steps = -5"]),
    (GOOD_TEXT, ["--set", "steps=10.0"], ["steps = 10.0", "write 10"]),
    (GOOD_TEXT, ["--set", "batch_size=0"], ["batch_size = 0"]),
    (GOOD_TEXT, ["--set", "batch_size=true"], ["batch_size = True", "wrong type"]),
    (GOOD_TEXT, ["--set", "seed=8589934592"], ["seed = 8589934592"]),
    (GOOD_TEXT, ["--set", "optim=[1, 2]"], ["optim = [1, 2]", "wrong type"]),
    (GOOD_TEXT, ["--set", "lora.targets=[q_proj, q_proj]"], ["lora.targets", "'q_proj' more than once"]),
    (GOOD_TEXT, ["--set", "steps=ten"], ["steps = 'ten'", "wrong type"]),
    (GOOD_TEXT.replace("name: ok", "name: ok\noptim: {lr: '2.0e-5'}"), [],
     ["optim.lr = '2.0e-5'", "remove the quotes"]),
    (GOOD_TEXT.replace("steps: 10", "steps: 1e3"), [], ["steps = '1e3'", "decimal point"]),
    (GOOD_TEXT + "on: 1\n", [], ["key True is not text", "quote it"]),
    (GOOD_TEXT + "3: x\n", [], ["key 3 is not text"]),
    (GOOD_TEXT, ["--out", ""], ["--out is empty"]),
    (GOOD_TEXT, ["--set", "lora.adapter_name=../../escape"], ["lora.adapter_name = '../../escape'", "folder"]),
    (GOOD_TEXT, ["--set", "model.source=" + "x" * 5000], ["model.source"]),
]


@pytest.mark.parametrize("text,extra,words", TRAIN_BAD, ids=[f"{i}-{(' '.join(b[1]) or (b[0] or 'none')[-12:])[:40]}"
                                                             for i, b in enumerate(TRAIN_BAD)])
def test_train_refuses_bad_input_with_exit_2(tmp_path, capsys, text, extra, words):
    err = _train(tmp_path, capsys, text, *extra)
    for w in words:
        assert w in err, f"{w!r} not in: {err}"
    assert not (tmp_path / "run").exists(), "a refused run must not create its directory"


def test_train_refuses_an_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine\n")
    err = _train(tmp_path, capsys, GOOD_TEXT, out=str(tmp_path / "afile"))
    assert "is a file, not a directory" in err and (tmp_path / "afile").read_text() == "mine\n"


def test_workflow_check_command(tmp_path, capsys):
    from grades.workflow.__main__ import main

    for text, words in [(None, ["no such file"]), ("profile: x\nprofile: y\n", ["cfg.yaml:2", "twice"]),
                        ("models: {a: 1\n", ["cfg.yaml:", "not valid YAML"]), ("", ["is empty"]),
                        ("[1, 2]\n", ["not a mapping"])]:
        p = tmp_path / "cfg.yaml"
        p.unlink(missing_ok=True)
        if text is not None:
            p.write_text(text)
        assert main(["check", str(p)]) == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words) and "Traceback" not in err, err
    assert main(["check", str(tmp_path)]) == 2 and "is a directory" in capsys.readouterr().err
    # `run` reads the --configfile files first: Snakemake would report neither the line nor the duplicate
    (tmp_path / "dup.yaml").write_text("seeds: [0]\nseeds: [1]\n")
    assert main(["run", "-n", "--configfile", str(tmp_path / "dup.yaml")]) == 2
    assert "dup.yaml:2" in capsys.readouterr().err


# ------------------------------------------------------------------ the workflow config
def _set(cfg, path, value):
    node = cfg
    *parents, leaf = path
    for k in parents:
        node = node[k]
    node[leaf] = value
    return cfg


def _rename(block: str, old: str, new):
    cfg = copy.deepcopy(SMOKE)
    cfg[block] = {(new if k == old else k): v for k, v in cfg[block].items()}
    if block == "datasets":
        for mc in cfg["models"].values():
            if mc.get("dataset") == old:
                mc["dataset"] = new
        if cfg["models"][M].get("dataset") is None:
            cfg["models"][M]["dataset"] = new
    if block == "models":
        cfg["compare"]["models"] = [new if m == old else m for m in cfg["compare"]["models"]]
    return cfg


BAD_NAMES = [
    ("..", "parent directory"), (".", "this directory"), ("", "empty"), ("a/b", "path separator"),
    ("../escape", "path separator"), ("/abs", "path separator"), ("~", "home-directory"), ("~user", "home-directory"),
    (".hidden", "hidden"), ("-rf", "option"), ("two words", "white space"), ("tab\there", "white space"),
    ("modèle", "non-ASCII"), ("模型", "non-ASCII"), ("x" * 101, "101 characters"), ("a*b", "'*'"), ("a:b", "':'"),
    ("{model}", "'{'"), ("a\\b", "path separator"),
]


@pytest.mark.parametrize("name,why", BAD_NAMES, ids=[f"{i}-{n[:12]}" for i, (n, _) in enumerate(BAD_NAMES)])
def test_names_that_cannot_be_paths_are_refused(name, why):
    refused(lambda: gw.load(_rename("models", M, name)), "models:", repr(name), why, "ASCII letters")
    refused(lambda: gw.load(_rename("datasets", "world-mc", name)), "datasets:", why)
    refused(lambda: gw.load({**copy.deepcopy(SMOKE), "profile": name}), "profile:", why)


def test_good_names_pass_and_are_the_wildcards():
    for name in ("a", "Tiny_Qwen3.v2-b", "0x", "a..b", "x" * 100):
        cfg = gw.load(_rename("models", M, name))
        assert name in cfg["models"]
        import re
        assert re.fullmatch(gw.WILDCARD, name)
    assert not re.fullmatch(gw.WILDCARD, "..") and not re.fullmatch(gw.WILDCARD, "a/b")


def test_names_equal_but_for_case_are_refused():
    cfg = copy.deepcopy(SMOKE)
    cfg["models"]["Tiny-Qwen3"] = copy.deepcopy(cfg["models"][M])
    refused(lambda: gw.load(cfg), "'Tiny-Qwen3' and 'tiny-qwen3' differ only in case")


WF_BAD = [
    # numbers that are not numbers
    (["finetune", "lr", "fp"], float("nan"), ["finetune.lr.fp = nan", "finite"]),
    (["finetune", "schedule", "warmup_ratio"], float("inf"), ["finetune.schedule.warmup_ratio = inf"]),
    (["models", M, "settings", "FP+GradES", "method", "tau"], float("nan"), ["method.tau = nan"]),
    (["settings", "FP+GradES", "method", "alpha"], float("-inf"), ["alpha = -inf"]),
    (["models", M, "size_b"], float("inf"), ["size_b = inf"]),
    (["datasets", "world-mc", "options", "n_train"], float("nan"), ["options.n_train = nan"]),
    (["models", M, "options", "pretrain_steps"], float("inf"), ["options.pretrain_steps = inf"]),
    (["eval", "gpu_memory_utilization"], float("nan"), ["eval.gpu_memory_utilization = nan"]),
    (["finetune", "optim"], {"max_grad_norm": -1.0}, ["optim.max_grad_norm = -1.0"]),
    (["finetune", "steps"], -10, ["steps", "-10"]),
    (["finetune", "steps"], 200.0, ["steps = 200.0", "write 200"]),
    (["finetune", "batch_size"], 0, ["batch_size", "0"]),
    (["finetune", "batch_size"], True, ["batch_size = True"]),
    (["finetune", "seq_len"], "128", ["seq_len = '128'", "remove the quotes"]),
    (["seeds"], [True], ["seeds.0 = True"]),
    (["seeds"], [0, 1, 0], ["seeds lists 0 more than once"]),
    (["seeds"], [2 ** 32], ["seeds.0"]),
    (["seeds"], [-1], ["seeds.0 = -1"]),
    (["jobs"], {"train": {"runtime_per_b": float("inf")}}, ["runtime_per_b = inf"]),
    # lists where mappings go and the reverse
    (["finetune"], [1, 2], ["finetune = [1, 2]", "wrong type"]),
    (["models", M, "settings"], ["FP"], ["wrong type"]),
    (["models", M, "settings", "FP+GradES"], None, ["settings.FP+GradES = None", "expected object"]),
    (["models", M, "source"], "x" * 5000, ["models.tiny-qwen3.source"]),
    (["models", M, "source"], "local:" + "x" * 5000, ["models.tiny-qwen3"]),
    (["seeds"], {"a": 1}, ["seeds", "wrong type"]),
    # silent rewrites
    (["report", "baseline"], "Fp", ["report.baseline = 'Fp'", "did you mean 'FP'"]),
    (["settings", "LoRA", "baseline"], "FP-GradES", ["settings.LoRA.baseline", "did you mean 'FP+GradES'"]),
    (["report", "paired_baseline"], "Lora", ["report.paired_baseline = 'Lora'", "did you mean 'LoRA'"]),
    (["report", "equivalence_margin"], 0, ["equivalence_margin", "0"]),
    (["report", "bootstrap_seed"], -1, ["bootstrap_seed = -1"]),
    (["datasets", "world-mc", "eval_tasks"], ["world_mcq"], ["'world_mcq'", "did you mean 'world_mc'"]),
    (["datasets", "world-mc", "eval_tasks"], ["boolq"], ["'boolq'", "lm_eval_tasks"]),
    (["datasets", "world-mc", "eval_tasks"], ["world_mc,boolq"], ["not one task name"]),
    (["datasets", "world-mc", "eval_tasks"], ["world_mc", "world_mc"], ["'world_mc' more than once"]),
    (["datasets", "world-mc", "lm_eval_tasks"], [""], ["not one task name"]),
    (["datasets", "shapes", "eval_tasks"], ["shapes_mc", "shapes_mcq"], ["vision-language", "one multiple-choice"]),
    (["models", M, "settings_only"], ["FP", "FP"], ["settings_only lists 'FP' more than once"]),
    (["compare", "include"], ["LoRA", "LoRA"], ["compare.include lists 'LoRA'"]),
    (["groups"], ["a", "a"], ["groups lists 'a'"]),
    (["compare", "models"], [M, M], ["compare.models lists"]),
    # a dataset source that is a directory
    (["datasets", "world-mc", "source"], "jsonl:/nonexistent/grades-data", ["datasets.world-mc.source",
                                                                           "does not exist"]),
]


@pytest.mark.parametrize("path,value,words", WF_BAD,
                         ids=[f"{i}-{'.'.join(map(str, b[0]))}" for i, b in enumerate(WF_BAD)])
def test_bad_workflow_values_are_refused(path, value, words):
    refused(lambda: gw.load(_set(copy.deepcopy(SMOKE), path, value)), *words)


@pytest.mark.parametrize("doc,words", [
    ([], ["top level, got list"]),
    (None, ["top level, got NoneType"]),
    ({**SMOKE, "models": {True: {"source": "tiny:qwen3"}}}, ["key True under models is not text"]),
    ({**SMOKE, "datasets": {1: {"source": "synthetic:world-mc"}}}, ["key 1 under datasets is not text"]),
])
def test_config_shapes_are_refused(doc, words):
    refused(lambda: gw.load(copy.deepcopy(doc)), *words)


def test_report_baseline_default_and_explicit():
    cfg = copy.deepcopy(SMOKE)
    del cfg["report"], cfg["compare"], cfg["sweeps"]
    for s in ("LoRA+GradES-weight", "LoRA+GradES-official"):
        del cfg["models"][M]["settings"][s]
    assert gw.load(cfg)["report"]["baseline"] == "FP"
    cfg["settings"] = {"LoRA": cfg["settings"]["LoRA"], "LoRA+GradES": cfg["settings"]["LoRA+GradES"]}
    cfg["models"][M]["settings"] = {"LoRA+GradES": {"method": {"tau": 2.0}}}
    cfg["models"]["tiny-vlm"]["settings"] = {"LoRA+GradES": {"method": {"language_tau": 1.0, "vision_tau": 0.1}}}
    assert gw.load(cfg)["report"]["baseline"] == "LoRA"  # no FP: the first setting
    cfg["report"] = {"baseline": "FP"}
    refused(lambda: gw.load(cfg), "report.baseline = 'FP' is not a setting")


# ------------------------------------------------------------------ jsonl: datasets
ITEM = {"context": "c", "question": "q?", "choices": ["a", "b"], "label": 1}


def jsonl_dir(root: Path, n: int = 6) -> Path:
    d = root / "mydata"
    d.mkdir()
    for split in ("train", "validation", "test"):
        (d / f"{split}.jsonl").write_text("".join(json.dumps({"id": f"{split}{i}", **ITEM}) + "\n" for i in range(n)))
    return d


def test_jsonl_dataset_prepare_checks_every_line(tmp_path, capsys):
    from grades.data.__main__ import main

    src = jsonl_dir(tmp_path)
    out = tmp_path / "prepared"
    assert main(["prepare", "--spec", f"jsonl:{src}", "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 6, "validation": 6, "test": 6} and meta["n_choices"] == [2]
    assert (out / "train.jsonl").read_bytes() == (src / "train.jsonl").read_bytes()
    capsys.readouterr()
    for bad, words in [
        (b'{"id": 1, "context": "c"\n', ["validation.jsonl:3", "malformed JSON"]),
        (b'{"id": "x", "context": "c", "question": "q", "choices": ["a"], "label": 0}\n', ["validation.jsonl:3",
                                                                                         "at least two"]),
        (b'{"id": "x", "context": "c", "question": "q", "choices": ["a", "b"], "label": NaN}\n', ["label"]),
        (b'{"id": "x", "context": "caf\xe9", "question": "q", "choices": ["a", "b"], "label": 0}\n',
         ["validation.jsonl:3", "0xe9", "UTF-8"]),
        (b"[1, 2]\n", ["validation.jsonl:3", "expected a JSON object"]),
    ]:
        lines = (src / "validation.jsonl").read_bytes().splitlines(keepends=True)
        (src / "validation.jsonl").write_bytes(b"".join(lines[:2]) + bad + b"".join(lines[3:]))
        assert main(["prepare", "--spec", f"jsonl:{src}", "--out", str(tmp_path / "again")]) == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words) and "Traceback" not in err, err
        assert not (tmp_path / "again").exists()
    (src / "validation.jsonl").unlink()
    assert main(["prepare", "--spec", f"jsonl:{src}", "--out", str(tmp_path / "again")]) == 2
    assert "has no validation.jsonl" in capsys.readouterr().err
    assert main(["prepare", "--spec", f"jsonl:{src}", "--out", str(tmp_path / "x"), "--set", "n_train=3"]) == 2
    assert "takes no options" in capsys.readouterr().err


def test_jsonl_dataset_in_the_workflow_config(tmp_path, monkeypatch):
    src = jsonl_dir(tmp_path)
    cfg = _set(copy.deepcopy(SMOKE), ["datasets", "world-mc", "source"], f"jsonl:{src}")
    del cfg["datasets"]["world-mc"]["options"]
    assert gw.load(cfg)["datasets"]["world-mc"]["source"] == f"jsonl:{src}"
    refused(lambda: gw.load(_set(copy.deepcopy(cfg), ["datasets", "world-mc", "options"], {"n_train": 3})),
            "datasets.world-mc.options", "takes no options")
    (src / "test.jsonl").unlink()
    refused(lambda: gw.load(copy.deepcopy(cfg)), "datasets.world-mc.source", "has no test.jsonl")
    monkeypatch.chdir(tmp_path)  # data kept inside the cache the workflow rebuilds
    inside = tmp_path / "cache" / "smoke" / "mine"
    inside.mkdir(parents=True)
    refused(lambda: gw.load(_set(copy.deepcopy(cfg), ["datasets", "world-mc", "source"], "jsonl:cache/smoke/mine")),
            "inside cache/smoke", "outside cache/")


def test_non_utf8_data_names_file_and_line(tmp_path):
    from grades.data import DataError, load_split

    d = jsonl_dir(tmp_path)
    (d / "train.jsonl").write_bytes((d / "train.jsonl").read_bytes() + b'{"id": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:7: byte 0xff at column 9 is not UTF-8"):
        load_split(d, "train")
    (d / "validation.jsonl").unlink()
    (d / "validation.jsonl").mkdir()
    with pytest.raises(DataError, match="is not a file"):
        load_split(d, "validation")


def test_prepare_options_that_are_not_finite_numbers():
    from grades.data import check_options
    from grades.models import check_options as model_options
    from grades.overrides import parse_options

    for v in ("NaN", "Infinity", "-Infinity"):
        opts = parse_options(f'{{"n_train": {v}}}', [])
        refused(lambda: check_options("data", opts, {"n_train": 0.5}), "data.options.n_train", "finite")
        refused(lambda: check_options("data", opts, {"n_train": 10}), "data.options.n_train", "expected int")
    refused(lambda: model_options("tiny", {"pretrain_lr": float("nan")}), "model.options.pretrain_lr", "finite")


# ------------------------------------------------------------------ what a write may replace
def test_atomic_dir_never_replaces_what_it_does_not_own(tmp_path, monkeypatch):
    from grades.io import TargetRefused, atomic_dir, atomic_write_text

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache" / "p" / "models").mkdir(parents=True)
    keep = tmp_path / "cache" / "p" / "keep.txt"
    keep.write_text("prepared\n")
    for target, words in [("cache/p/models/..", "names no entry"), ("cache/p/models/.", "names no entry"),
                          ("", "names no entry"), (".", "names no entry"), (str(tmp_path), "working directory"),
                          ("/", "names no entry")]:
        with pytest.raises(TargetRefused, match=words):
            with atomic_dir(target, owned_by="meta.json") as tmp:
                (tmp / "x").write_text("x")
    assert keep.read_text() == "prepared\n"
    mine = tmp_path / "mine"  # a directory of the user's own: left alone
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    with pytest.raises(TargetRefused, match="no meta.json"):
        with atomic_dir(mine, owned_by="meta.json") as tmp:
            pass
    assert (mine / "thesis.tex").exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "f").write_text("file\n")
    with pytest.raises(TargetRefused, match="is a file"):
        with atomic_dir(tmp_path / "f"):
            pass
    with pytest.raises(TargetRefused, match="is a directory"):
        atomic_write_text(mine, "x")
    # a symbolic link is replaced as a link: what it points to is untouched
    (tmp_path / "link").symlink_to(mine)
    with atomic_dir(tmp_path / "link", owned_by="meta.json") as tmp:
        (tmp / "meta.json").write_text("{}")
    assert (tmp_path / "link").is_dir() and not (tmp_path / "link").is_symlink()
    assert (mine / "thesis.tex").exists()


def test_models_prepare_refuses_a_parent_directory_out(tmp_path, capsys, monkeypatch):
    from grades.models.__main__ import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache" / "p" / "models").mkdir(parents=True)
    (tmp_path / "cache" / "p" / "data.txt").write_text("keep\n")
    assert main(["prepare", "--spec", "tiny:qwen3", "--out", "cache/p/models/.."]) == 2
    assert "names no entry" in capsys.readouterr().err
    assert (tmp_path / "cache" / "p" / "data.txt").read_text() == "keep\n"


def test_lora_target_that_matches_nothing(capsys):
    from tinymodels import build_tiny

    from grades.models import apply_lora

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "adapter_name": "default"}
    refused(lambda: apply_lora(build_tiny(), {**lora, "targets": ["qproj"]}), "lora.targets = ['qproj']",
            "did you mean 'q_proj'", "linear layers are named")
    apply_lora(build_tiny(), {**lora, "targets": ["q_proj", "qkv_proj"]})
    assert "['qkv_proj'] match no module" in capsys.readouterr().err


# ------------------------------------------------------------------ through Snakemake
def _snakemake(tmp_path, cfg: dict, *targets: str, dry: bool = True):
    import subprocess
    import sys

    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "1", *(["-n"] if dry else []), *targets, "--configfile", str(tmp_path / "wf.yaml")]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_snakemake_refuses_path_names_and_deletes_nothing(tmp_path):
    cache = tmp_path / "cache" / "smoke"
    (cache / "models" / "prepared").mkdir(parents=True)
    (cache / "data" / "world-mc").mkdir(parents=True)
    r = _snakemake(tmp_path, _rename("models", M, ".."), "cache/smoke/models/..", dry=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "nothing was run" in out and "'..' means the parent directory" in out
    assert (cache / "models" / "prepared").is_dir() and (cache / "data" / "world-mc").is_dir()
    dup = (yaml.safe_dump(SMOKE, sort_keys=False) + "seeds: [1]\n")
    (tmp_path / "dup.yaml").write_text(dup)
    cfg = yaml.safe_load(dup)
    r = _snakemake(tmp_path, cfg)  # the mapping itself is fine; the file with the duplicate is not:
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                        str(tmp_path), "-n", "--configfile", str(tmp_path / "dup.yaml")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "key 'seeds' is given twice" in r.stdout + r.stderr


@pytest.mark.slow
def test_jsonl_dataset_is_prepared_by_the_workflow(tmp_path):
    src = jsonl_dir(tmp_path)
    cfg = copy.deepcopy(SMOKE)
    cfg["profile"] = "mine"
    cfg["datasets"]["world-mc"] = {"source": f"jsonl:{src}", "eval_tasks": ["world_mc"]}
    r = _snakemake(tmp_path, cfg, "cache/mine/data/world-mc", dry=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = tmp_path / "cache" / "mine" / "data" / "world-mc"
    assert json.loads((out / "meta.json").read_text())["counts"]["train"] == 6
    assert (out / "test.jsonl").read_bytes() == (src / "test.jsonl").read_bytes()
    r = _snakemake(tmp_path, cfg)  # the whole workflow plans with it, the prepared copy up to date
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "output: cache/mine/data/shapes" in r.stdout and "output: cache/mine/data/world-mc" not in r.stdout
