# Prepared models and datasets, cached per profile under cache/<profile>/.


rule prepare_data:
    output:
        directory(f"{CACHE}/data/{{dataset}}"),
    params:
        py=PY,
        spec=lambda wc: gw.quote(W["datasets"][wc.dataset]["source"]),
        options=lambda wc: gw.quote(gw.dumps(W["datasets"][wc.dataset]["options"])),
    log:
        f"{LOGS}/prepare_data/{{dataset}}.log",
    conda:
        ENV
    shell:
        "{params.py} -m grades.data prepare --spec {params.spec} --out {output} --options {params.options} > {log} 2>&1"


rule prepare_model:
    output:
        directory(f"{CACHE}/models/{{model}}"),
    params:
        py=PY,
        spec=lambda wc: gw.quote(W["models"][wc.model]["source"]),
        options=lambda wc: gw.quote(gw.dumps(W["models"][wc.model]["options"])),
    log:
        f"{LOGS}/prepare_model/{{model}}.log",
    benchmark:
        f"{BENCH}/prepare_model/{{model}}.tsv"
    threads: lambda wc: _threads(wc.model)
    conda:
        ENV
    shell:
        "{params.py} -m grades.models prepare --spec {params.spec} --out {output} --options {params.options} "
        "--threads {threads} > {log} 2>&1"
