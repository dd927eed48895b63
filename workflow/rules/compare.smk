# The second target `snakemake --cores all compare`: the runs of the `compare:` block and
# the `sweeps:` (plus the main settings it includes, whose runs are shared with `all`),
# ranked in results/tables/<profile>/comparison.{csv,md} and drawn per model in
# figures/<profile>/pareto_<model>.{png,pdf}. Not part of the main target.
#
# Matched-budget baselines (compare.matched, grades.workflow.matched): a two-stage plan.
# Once a method's run and its baseline's have ended, the checkpoint matched_budget writes
# each matched run's budget.json (the method's stop step, its share of the baseline's
# training FLOPs); the compare job then asks for the matched runs whose budget is planned,
# and their run_config job sets the steps from it. They are drawn in
# figures/<profile>/matched_<model>.{png,pdf} and tabled in matched.{csv,md}.

COMPARE_RUNS = gw.compare_runs(W)
MATCHED_RUNS = gw.matched_runs(W)
MATCHED_OUT = (
    [f"{TABLES}/matched.csv", f"{TABLES}/matched.md"]
    + expand(f"{FIGURES}/matched_{{model}}.{{ext}}", model=gw.compare_models(W), ext=["png", "pdf"])
    if MATCHED_RUNS
    else []
)


checkpoint matched_budget:
    input:
        method=lambda wc: _matched_train(wc, 0),
        baseline=lambda wc: _matched_train(wc, 1),
    output:
        f"{RESULTS}/{{model}}/{{setting}}/seed{{seed}}/budget.json",
    log:
        f"{LOGS}/matched_budget/{{model}}/{{setting}}/seed{{seed}}.log",
    wildcard_constraints:
        setting=gw.matched_slug_regex(W),
    run:
        gw.write_budget(W, _run(wildcards), input.method, input.baseline, output[0])


rule compare:
    input:
        evals=[f"{run_dir(r)}/eval.json" for r in COMPARE_RUNS],
        trains=[f"{run_dir(r)}/train.json" for r in COMPARE_RUNS],
        base=[f"{RESULTS}/{m}/base/eval.json" for m in gw.compare_models(W) if W["models"][m]["eval_base"]],
        budgets=[f"{run_dir(r)}/budget.json" for r in MATCHED_RUNS],
        matched=_matched_evals,
    output:
        table=report_comparison(f"{TABLES}/comparison.csv"),
        table_md=report_comparison(f"{TABLES}/comparison.md"),
        pareto=[
            report_comparison(f)
            for f in expand(f"{FIGURES}/pareto_{{model}}.{{ext}}", model=gw.compare_models(W), ext=["png", "pdf"])
        ],
        matched=[report_comparison(f) for f in MATCHED_OUT],
    log:
        f"{LOGS}/compare.log",
    benchmark:
        f"{BENCH}/compare.tsv"
    conda:
        ENV
    params:
        env=job_env,
        py=PY,
        runs=lambda wc: RESULTS,
        figures=lambda wc: FIGURES,
        select=_select,
        models=" ".join(gw.quote(m) for m in gw.compare_models(W)),
        claims=CLAIM_ARGS,
        matched="--matched" if MATCHED_RUNS else "",
    shell:
        "{params.env} {params.py} -m grades.report compare --runs {params.runs} --tables $(dirname {output.table}) "
        "--figures {params.figures} --select {params.select} --models {params.models} {params.claims} "
        "{params.matched} > {log} 2>&1"
