# Prepared models and datasets, cached per profile under cache/<profile>/.


rule prepare_data:
    output:
        directory(f"{CACHE}/data/{{dataset}}"),
    log:
        f"{LOGS}/prepare_data/{{dataset}}.log",
    benchmark:
        f"{BENCH}/prepare_data/{{dataset}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=W["jobs"]["prepare"]["mem_mb"],
        runtime=W["jobs"]["prepare"]["runtime"],
    params:
        env=job_env,
        py=PY,
        spec=lambda wc: gw.quote(W["datasets"][wc.dataset]["source"]),
        options=lambda wc: gw.quote(gw.dumps(W["datasets"][wc.dataset]["options"])),
    shell:
        "{params.env} {params.py} -m grades.data prepare --spec {params.spec} --out {output} "
        "--options {params.options} > {log} 2>&1"


rule prepare_model:
    output:
        directory(f"{CACHE}/models/{{model}}"),
    log:
        f"{LOGS}/prepare_model/{{model}}.log",
    benchmark:
        f"{BENCH}/prepare_model/{{model}}.tsv"
    # every run of a model waits for it, and its pretraining is the longest job of the smoke
    # profile: start it first rather than after the cheaper jobs the scheduler would pick
    priority: 10
    conda:
        ENV
    threads: _threads("prepare")
    resources:
        mem_mb=_res("prepare", "mem_mb"),
        runtime=_res("prepare", "runtime"),
        cpus_per_task=_res("prepare", "cpus"),  # SLURM --cpus-per-task (0: the plugin uses threads)
    params:
        env=job_env,
        py=PY,
        spec=lambda wc: gw.quote(W["models"][wc.model]["source"]),
        options=lambda wc: gw.quote(gw.dumps(W["models"][wc.model]["options"])),
    shell:
        "{params.env} {params.py} -m grades.models prepare --spec {params.spec} --out {output} "
        "--options {params.options} --threads {threads} > {log} 2>&1"
