"""The `compare:` and `sweeps:` blocks of the workflow config: expansion, naming, validation."""

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
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
M = "tiny-qwen3"


def smoke(**blocks):
    cfg = copy.deepcopy(SMOKE)
    cfg.update(copy.deepcopy(blocks))
    return cfg


def bare():
    """The smoke config without its compare and sweeps blocks (and the per-model values they use)."""
    cfg = copy.deepcopy(SMOKE)
    for s in cfg.pop("compare", {}).get("settings", {}):
        cfg["models"][M]["settings"].pop(s, None)
    cfg.pop("sweeps", None)
    return cfg


def test_sweep_names_are_grid_products_with_safe_slugs():
    names = gw.sweep_settings("g", {"base": "LoRA+GradES", "grid": {"method.tau": [0.5, 1e-05, 2],
                                                                     "method.alpha": [0.3]}})
    assert list(names) == ["LoRA+GradES[tau=0.5,alpha=0.3]", "LoRA+GradES[tau=1e-05,alpha=0.3]",
                           "LoRA+GradES[tau=2,alpha=0.3]"]
    assert names["LoRA+GradES[tau=0.5,alpha=0.3]"] == {"method.tau": 0.5, "method.alpha": 0.3}
    slugs = [gw.slug(n) for n in names]
    assert slugs == ["lora-grades-tau-0-5-alpha-0-3", "lora-grades-tau-1e-05-alpha-0-3", "lora-grades-tau-2-alpha-0-3"]
    assert all(re.fullmatch("[a-z0-9-]+", s) for s in slugs)  # the Snakefile's wildcard constraint
    # two keys ending alike keep their full paths
    both = gw.sweep_settings("g", {"base": "X", "grid": {"lora.alpha": [8], "method.alpha": [0.1]}})
    assert list(both) == ["X[lora.alpha=8,method.alpha=0.1]"]


def test_smoke_main_target_unchanged_and_compare_target_adds_runs():
    cfg = gw.load(copy.deepcopy(SMOKE))
    assert [(r.model, r.slug) for r in gw.runs(cfg)] == [
        (m, s) for m in (M, "tiny-vlm") for s in ("fp", "fp-grades", "lora", "lora-grades")]
    comp = gw.compare_runs(cfg)
    assert {r.model for r in comp} == {M}  # compare.models: the VLM is compared in the main target only
    methods = {}
    for r in comp:
        rc = gw.run_config(cfg, r, "m", "d")
        assert rc["mode"] == "lora" or r.setting in ("FP", "FP+GradES")  # FP: what compare.matched needs
        assert rc["name"] == r.setting
        methods[r.setting] = rc["method"] if isinstance(rc["method"], str) else rc["method"]["name"]
    # shared with the main target: the included settings and those compare.matched is planned from
    assert [r.setting for r in comp[:4]] == ["FP", "FP+GradES", "LoRA", "LoRA+GradES"]
    assert {"none", "grades", "es", "grades-weight", "grades-official", "autofreeze", "freezeout",
            "bottom-k"} == set(methods.values())
    sweep = [r for r in comp if "[" in r.setting]
    assert [r.setting for r in sweep] == ["LoRA+GradES[tau=1.0]", "LoRA+GradES[tau=4.0]"]
    assert gw.compare_models(cfg) == [M]


def test_sweep_keeps_the_models_own_values_unless_the_grid_sets_them():
    cfg = gw.load(smoke(sweeps={"a": {"base": "LoRA+GradES", "grid": {"method.alpha": [0.1, 0.2]}},
                                "t": {"base": "LoRA+GradES", "grid": {"method.tau": [9.0]}},
                                "lr": {"base": "FP", "grid": {"optim.lr": [1e-4], "steps": [50]}}}))
    tau_model = SMOKE["models"][M]["settings"]["LoRA+GradES"]["method"]["tau"]
    a = gw.run_config(cfg, gw.PlannedRun(M, "LoRA+GradES[alpha=0.1]", 0), "m", "d")
    assert a["method"] == {"name": "grades", "alpha": 0.1, "tau": tau_model}
    t = gw.run_config(cfg, gw.PlannedRun(M, "LoRA+GradES[tau=9.0]", 0), "m", "d")
    assert t["method"]["tau"] == 9.0 and t["method"]["alpha"] == 0.3
    lr = gw.run_config(cfg, gw.PlannedRun(M, "FP[lr=0.0001,steps=50]", 0), "m", "d")
    assert lr["optim"]["lr"] == 1e-4 and lr["steps"] == 50  # the grid beats finetune.lr's mapping
    assert "FP[lr=0.0001,steps=50]" not in {r.setting for r in gw.runs(cfg)}
    assert gw.setting_by_slug(cfg, "fp-lr-0-0001-steps-50") == "FP[lr=0.0001,steps=50]"


def test_sweep_target_all_joins_the_main_target_for_its_models():
    cfg = gw.load(smoke(sweeps={"t": {"base": "FP+GradES", "grid": {"method.tau": [1.0]}, "target": "all"}}))
    assert "FP+GradES[tau=1.0]" in {r.setting for r in gw.runs(cfg)}
    assert "FP+GradES[tau=1.0]" in {r.setting for r in gw.compare_runs(cfg)}


def test_empty_compare_block_compares_the_main_runs():
    cfg = gw.load(bare())
    assert gw.compare_runs(cfg) == gw.runs(cfg)


def test_compare_settings_take_per_model_overrides():
    cfg = gw.load(copy.deepcopy(SMOKE))
    rc = gw.run_config(cfg, gw.PlannedRun(M, "LoRA+GradES-weight", 0), "m", "d")
    assert rc["method"]["name"] == "grades-weight"
    assert rc["method"]["tau"] == SMOKE["models"][M]["settings"]["LoRA+GradES-weight"]["method"]["tau"]


BAD = [
    # (blocks, words the message must contain)
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.taus": [1.0]}}}},
     ["sweeps.s", "taus", "did you mean 'tau'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"optim.lrr": [1.0]}}}}, ["sweeps.s", "optim.lrr", "'lr'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"stepz": [3]}}}}, ["stepz", "did you mean 'steps'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.tau": [-1.0]}}}}, ["sweeps.s", "tau", "-1.0"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.tau": ["big"]}}}}, ["tau", "'big'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"mode": ["fp"]}}}}, ["sweeps.s.grid", "'mode'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"model.source": ["x"]}}}}, ["'model.source'", "cannot"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"seed": [1]}}}}, ["'seed'", "seeds"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"steps.x": [1]}}}}, ["steps.x", "not a mapping"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method tau": [1]}}}}, ["method tau", "dotted"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.tau": [1.0, 1.0]}}}}, ["repeated", "method.tau"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.tau": []}}}}, ["sweeps.s.grid.method.tau"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {}}}}, ["sweeps.s.grid"]),
    ({"sweeps": {"s": {"base": "LoRA+GradEZ", "grid": {"method.tau": [1.0]}}}},
     ["sweeps.s.base", "did you mean 'LoRA+GradES'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.tau": [1.0]}, "modles": [M]}}},
     ["sweeps.s.modles", "did you mean 'models'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.tau": [1.0]}, "models": ["tny-qwen3"]}}},
     ["sweeps.s.models", "tny-qwen3", "did you mean 'tiny-qwen3'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.tau": [1.0]}, "target": "main"}}},
     ["target", "'main'"]),
    ({"sweeps": {"s": {"base": "LoRA+GradES", "grid": {"method.tau": [1.0]}},
                 "t": {"base": "LoRA+GradES", "grid": {"method.tau": [1.0]}}}}, ["sweeps.t", "already defined"]),
    ({"compare": {"inclde": ["LoRA"]}}, ["compare.inclde", "did you mean 'include'"]),
    ({"compare": {"include": ["LORA"]}}, ["compare.include", "LORA", "did you mean 'LoRA'"]),
    ({"compare": {"models": ["tiny-qwen"]}}, ["compare.models", "did you mean 'tiny-qwen3'"]),
    ({"compare": {"settings": {"LoRA": {"mode": "lora"}}}}, ["compare.settings.LoRA", "compare.include"]),
    ({"compare": {"settings": {"X": {"mode": "lora", "method": {"name": "autofrieze"}}}}},
     ["autofrieze", "did you mean 'autofreeze'"]),
    ({"compare": {"settings": {"X": {"mode": "full"}}}}, ["compare.settings.X.mode", "'full'"]),
    ({"compare": {"settings": {"LoRA-": {"mode": "lora"}}}}, ["'LoRA-'", "same path 'lora'"]),
]


@pytest.mark.parametrize("blocks,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_compare_or_sweep_names_the_field(blocks, words):
    cfg = bare()
    cfg.update(copy.deepcopy(blocks))
    with pytest.raises(ConfigError) as e:
        gw.load(cfg)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in message: {msg}"


def test_default_compare_target_is_apart_from_the_main_target():
    cfg = gw.load(copy.deepcopy(DEFAULT))
    main = gw.runs(cfg)
    assert [r.setting for r in main if r.model == "smollm2-135m"] == \
        ["FP", "FP+ES", "FP+GradES", "LoRA", "LoRA+ES", "LoRA+GradES"]
    comp = gw.compare_runs(cfg)
    assert {r.model for r in comp} == {"smollm2-135m"}
    methods = {}
    for r in comp:
        rc = gw.run_config(cfg, r, "m", "d")
        assert rc["mode"] == "lora" or r.setting in ("FP", "FP+GradES")  # FP: what compare.matched needs
        methods.setdefault(rc["method"] if isinstance(rc["method"], str) else rc["method"]["name"], []).append(r)
    assert {"es", "grades", "grades-weight", "grades-official", "autofreeze", "freezeout"} <= set(methods)
    assert len(methods["grades"]) >= 3  # LoRA+GradES and its tau sweep
    shared = [r for r in comp if r in main]
    assert {r.setting for r in shared} == {"FP", "FP+GradES", "LoRA", "LoRA+ES", "LoRA+GradES"}
    new = [r for r in comp if r not in main]
    assert 5 <= len(new) <= 9, "the compare target's own runs (about 5 min each on 2 cores)"
    assert len(gw.matched_runs(cfg)) == 4, "at most 4 matched runs, shorter than the baselines"


@pytest.mark.slow
def test_snakemake_compare_target_dry_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile", str(ROOT / "Snakefile"),
                        "--directory", str(tmp_path), "compare", "--configfile", str(ROOT / "config" / "smoke.yaml")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    n = len(gw.compare_runs(gw.load(copy.deepcopy(SMOKE))))
    assert counts["compare"] == "1" and counts["train"] == str(n) and counts["evaluate"] == str(n)
    assert "tables" not in counts and "figures" not in counts
    assert "figures/smoke/pareto_tiny-qwen3.png" in out and "lora-grades-tau-1-0" in out
    # matched-budget runs: only their budgets are planned until the methods' runs have ended
    assert counts["matched_budget"] == "4" and "figures/smoke/matched_tiny-qwen3.png" in out
    assert not re.search(r"matched[a-z-]*/seed0/(train\.json|eval\.json|run\.yaml)", out)


def test_official_peer_is_needed_to_run_not_to_plan(tmp_path, monkeypatch):
    """`grades-official` (the released package in .peers/, scripts/setup.sh): a fresh clone
    without it still validates and plans every run; only binding the method to a model (the
    start of training) needs it, and the error says how to install it."""
    from grades.methods import build_method
    from grades.methods.base import MethodContext
    from grades.methods.official import PeerMissingError

    monkeypatch.setenv("GRADES_OFFICIAL_DIR", str(tmp_path / "no-peers"))
    cfg = gw.load(copy.deepcopy(SMOKE))
    run = next(r for r in gw.compare_runs(cfg) if r.setting == "LoRA+GradES-official")
    rc = gw.run_config(cfg, run, "m", "d")
    assert rc["method"]["name"] == "grades-official" and rc["method"]["tau"] == 0.45
    method = build_method(rc["method"])
    with pytest.raises(PeerMissingError, match=r"(?s)pip install --no-deps --target .*no-peers.*scripts/setup\.sh"):
        method.bind(MethodContext(model=None, components=[], planned_steps=10, frozen=[]))
