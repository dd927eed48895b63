# The second target `snakemake --cores all compare`: the runs of the `compare:` block and
# the `sweeps:` (plus the main settings it includes, whose runs are shared with `all`),
# ranked in results/tables/<profile>/comparison.{csv,md} and drawn per model in
# figures/<profile>/pareto_<model>.{png,pdf}. Not part of the main target.

COMPARE_RUNS = gw.compare_runs(W)


rule compare:
    input:
        evals=[f"{run_dir(r)}/eval.json" for r in COMPARE_RUNS],
        trains=[f"{run_dir(r)}/train.json" for r in COMPARE_RUNS],
        base=[f"{RESULTS}/{m}/base/eval.json" for m in gw.compare_models(W) if W["models"][m]["eval_base"]],
    output:
        table=report_comparison(f"{TABLES}/comparison.csv"),
        table_md=report_comparison(f"{TABLES}/comparison.md"),
        pareto=[
            report_comparison(f)
            for f in expand(f"{FIGURES}/pareto_{{model}}.{{ext}}", model=gw.compare_models(W), ext=["png", "pdf"])
        ],
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
        select=" ".join(gw.quote(f"{r.model}/{r.slug}/seed{r.seed}") for r in COMPARE_RUNS),
        models=" ".join(gw.quote(m) for m in gw.compare_models(W)),
        claims=CLAIM_ARGS,
    shell:
        "{params.env} {params.py} -m grades.report compare --runs {params.runs} --tables $(dirname {output.table}) "
        "--figures {params.figures} --select {params.select} --models {params.models} {params.claims} > {log} 2>&1"
