# Tables (and figures) built only from run files.


def _all_evals():
    evals = [f"{run_dir(r)}/eval.json" for r in RUNS]
    evals += [f"{RESULTS}/{m}/base/eval.json" for m, mc in W["models"].items() if mc["eval_base"]]
    return evals


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
        baseline=gw.quote(W["report"]["baseline"]),
    log:
        f"{LOGS}/tables.log",
    shell:
        "python -m grades.report tables --runs {RESULTS} --out {TABLES} --baseline {params.baseline} > {log} 2>&1"
