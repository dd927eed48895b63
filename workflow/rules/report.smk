# Tables and figures, built only from run files.


rule tables:
    input:
        evals=_all_evals(),
        trains=[f"{run_dir(r)}/train.json" for r in RUNS],
    output:
        accuracy=f"{TABLES}/accuracy.csv",
        accuracy_md=f"{TABLES}/accuracy.md",
        efficiency=f"{TABLES}/efficiency.csv",
        efficiency_md=f"{TABLES}/efficiency.md",
    params:
        py=PY,
        runs=lambda wc: RESULTS,  # the tables read every run file under it
        baseline=gw.quote(W["report"]["baseline"]),
    log:
        f"{LOGS}/tables.log",
    conda:
        ENV
    shell:
        "{params.py} -m grades.report tables --runs {params.runs} --out $(dirname {output.accuracy}) "
        "--baseline {params.baseline} > {log} 2>&1"
