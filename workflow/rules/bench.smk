# Performance benchmark (issue 8): `snakemake bench --cores all`. Not part of `all`.
#
# Monitoring overhead, realised vs predicted speedup, memory and the sampled estimator
# (grades.bench), plus the end-to-end times of the workflows already run, read from
# results/benchmarks/<profile>/. Uses the default profile's prepared SmolLM2-135M and
# Social IQa when they are in cache/default (skipped with a note otherwise).


rule bench:
    output:
        summary="results/bench/summary.md",
        json="results/bench/bench.json",
    log:
        "results/logs/bench.log",
    benchmark:
        "results/bench/snakemake_benchmark.tsv"
    conda:
        ENV
    threads: all_cores
    params:
        env=job_env,
        py=PY,
    shell:
        "{params.env} {params.py} -m grades.bench --out results/bench --threads {threads} > {log} 2>&1"
