# Download every Hub model and dataset of the profile once (grades.prefetch), where the
# Hub is reachable: `snakemake prefetch --configfile config/paper.yaml [--profile ...]`.
# A local rule: with the SLURM profile it runs on the submitting (login) node, which has
# internet; every other job then runs with HF_HUB_OFFLINE=1 from the shared HF cache.
# Not an input of the other rules, on purpose: enabling a model group refetches, and
# must not make every finished run out of date.


rule prefetch:
    output:
        f"{CACHE}/prefetch.json",
    log:
        f"{LOGS}/prefetch.log",
    benchmark:
        f"{BENCH}/prefetch.tsv"
    conda:
        ENV
    params:
        env=job_env,
        py=PY,
        cfg=lambda wc: gw.quote(gw.dumps(config)),
    shell:
        "{params.env} {params.py} -m grades.prefetch --config-json {params.cfg} --out {output} > {log} 2>&1"
