# Tables and figures, built only from run files. Each is marked for the HTML report
# (`snakemake --report report.html`): category = what it shows, subcategory = the profile;
# captions in workflow/report/.
#
# `tables` and `figures` wait for every planned run (the main target). `partial` makes the
# same tables and figures from whatever runs exist now, never running or waiting on one: a
# run that failed, was never run or was not evaluated is marked missing (runs.md says which
# and why). After `snakemake --cores all --keep-going` left a run failed:
#   snakemake --cores all partial


PAPER_MODELS = W["report"]["paper_models"]  # our model -> the paper's name: comparison tables too
PAPER_TABLES = [f"{TABLES}/{n}" for n in gw.PAPER_TABLES] if PAPER_MODELS else []
# the paper's numbers: `report.paper_dir`, else results/paper of the checkout or the wheel
PAPER_DIR = W["report"]["paper_dir"] or str(gr.paper_dir())
# how the tables state their claims (docs/guides/claims.md): the same for `tables` and `compare`
CLAIM_ARGS = f"--margin {W['report']['equivalence_margin']:g} --bootstrap-seed {W['report']['bootstrap_seed']}" + (
    f" --paired-baseline {gw.quote(W['report']['paired_baseline'])}" if W["report"]["paired_baseline"] else ""
)


# every run and base evaluation the main target plans, as `grades.report tables --expect` takes them
EXPECTED = " ".join(
    [gw.quote(f"{r.model}/{r.slug}/seed{r.seed}={r.setting}") for r in RUNS]
    + [gw.quote(f"{m}/base") for m in gw.enabled_models(W) if W["models"][m]["eval_base"]]
)


rule tables:
    input:
        evals=_all_evals(),
        trains=[f"{run_dir(r)}/train.json" for r in RUNS],
    output:
        accuracy=report_table(f"{TABLES}/accuracy.csv", "accuracy"),
        accuracy_md=report_table(f"{TABLES}/accuracy.md", "accuracy"),
        efficiency=report_table(f"{TABLES}/efficiency.csv", "efficiency"),
        efficiency_md=report_table(f"{TABLES}/efficiency.md", "efficiency"),
        runs=f"{TABLES}/runs.csv",
        runs_md=report_table(f"{TABLES}/runs.md", "runs"),
        paper=[report_table(p, "paper") for p in PAPER_TABLES],
    log:
        f"{LOGS}/tables.log",
    benchmark:
        f"{BENCH}/tables.tsv"
    conda:
        ENV
    params:
        env=job_env,
        py=PY,
        runs=lambda wc: RESULTS,  # the tables read every run file under it
        baseline=gw.quote(W["report"]["baseline"]),
        paper=(
            f"--paper-dir {gw.quote(PAPER_DIR)} --paper-models "
            + gw.quote(",".join(f"{k}={v}" for k, v in PAPER_MODELS.items()))
            + " --planned-tasks "
            + gw.quote(",".join(dict.fromkeys(t for m in PAPER_MODELS if m not in VLMS for t in gw.eval_tasks(W, m))))
            if PAPER_MODELS
            else ""
        ),
        expect=EXPECTED,
        claims=CLAIM_ARGS,
    shell:
        "{params.env} {params.py} -m grades.report tables --runs {params.runs} --out $(dirname {output.accuracy}) "
        "--baseline {params.baseline} {params.paper} --expect {params.expect} {params.claims} > {log} 2>&1"


FIGURE_NAMES = ["fig1_layer_signals", "fig3_frozen_fraction", "fig4_signal_by_kind", "freeze_heatmap"]


rule figures:
    input:
        trains=[f"{run_dir(r)}/train.json" for r in RUNS],
    output:
        fig1=f"{FIGURES}/fig1_layer_signals.png",
        rest=[report_figure(f) for f in expand(f"{FIGURES}/{{name}}.{{ext}}", name=FIGURE_NAMES, ext=["png", "pdf"])],
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCH}/figures.tsv"
    conda:
        ENV
    params:
        env=job_env,
        py=PY,
        runs=lambda wc: RESULTS,
        layer=f"--layer {W['report']['figure_layer']}" if W["report"]["figure_layer"] is not None else "",
    shell:
        "{params.env} {params.py} -m grades.report figures --runs {params.runs} --out $(dirname {output.fig1}) "
        "{params.layer} > {log} 2>&1"


# Vision-language models (VLMS, evaluate.smk): the multimodal table and the VLM
# convergence figure; part of `all` only when the profile has a VLM.
MULTIMODAL_OUTPUTS = (
    [
        f"{TABLES}/multimodal.csv",
        f"{TABLES}/multimodal.md",
        f"{FIGURES}/vlm_convergence.png",
        f"{FIGURES}/vlm_convergence.pdf",
    ]
    if VLMS
    else []
)


rule multimodal:
    input:
        evals=[f"{run_dir(r)}/eval.json" for r in RUNS if r.model in VLMS]
        + [f"{RESULTS}/{m}/base/eval.json" for m in VLMS if W["models"][m]["eval_base"]],
        trains=[f"{run_dir(r)}/train.json" for r in RUNS if r.model in VLMS],
    output:
        table=report_multimodal(f"{TABLES}/multimodal.csv"),
        table_md=report_multimodal(f"{TABLES}/multimodal.md"),
        png=report_multimodal(f"{FIGURES}/vlm_convergence.png"),
        pdf=report_multimodal(f"{FIGURES}/vlm_convergence.pdf"),
    log:
        f"{LOGS}/multimodal.log",
    benchmark:
        f"{BENCH}/multimodal.tsv"
    conda:
        ENV
    params:
        env=job_env,
        py=PY,
        runs=lambda wc: RESULTS,
    shell:
        "{params.env} {params.py} -m grades.report multimodal --runs {params.runs} --tables $(dirname {output.table}) "
        "--figures $(dirname {output.png}) > {log} 2>&1"


rule partial:
    # no input, no output (not even a benchmark file, which would be one): always runs when asked
    # for, and reads whatever is under the runs root now
    log:
        f"{LOGS}/partial.log",
    conda:
        ENV
    params:
        env=job_env,
        py=PY,
        runs=lambda wc: RESULTS,
        tables=lambda wc: TABLES,
        figures=lambda wc: FIGURES,
        baseline=rules.tables.params.baseline,
        paper=rules.tables.params.paper,
        expect=EXPECTED,
        layer=rules.figures.params.layer,
        multimodal="--multimodal" if VLMS else "",
        claims=CLAIM_ARGS,
    shell:
        "{params.env} {params.py} -m grades.report partial --runs {params.runs} --tables {params.tables} "
        "--figures {params.figures} --baseline {params.baseline} {params.paper} --expect {params.expect} "
        "{params.layer} {params.multimodal} {params.claims} > {log} 2>&1"
