# One fine-tuning run per (model, setting, seed).


def _run(wc):
    return gw.Run(wc.model, gw.setting_by_slug(W, wc.setting), int(wc.seed))


def _model_dir(model):
    return f"{CACHE}/models/{model}"


def _data_dir(model):
    return f"{CACHE}/data/{W['models'][model]['dataset']}"


rule run_config:
    output:
        f"{RESULTS}/{{model}}/{{setting}}/seed{{seed}}/run.yaml",
    params:
        cfg=lambda wc: gw.run_config(W, _run(wc), _model_dir(wc.model), _data_dir(wc.model)),
    log:
        f"{LOGS}/run_config/{{model}}/{{setting}}/seed{{seed}}.log",
    run:
        gw.write_run_config(params.cfg, output[0])


rule train:
    input:
        cfg=rules.run_config.output,
        model=lambda wc: _model_dir(wc.model),
        data=lambda wc: _data_dir(wc.model),
    output:
        f"{RESULTS}/{{model}}/{{setting}}/seed{{seed}}/train.json",
    log:
        f"{LOGS}/train/{{model}}/{{setting}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{model}}/{{setting}}/seed{{seed}}.tsv"
    threads: workflow.cores
    resources:
        gpus=lambda wc: W["models"][wc.model]["gpus"],
    shell:
        "python -m grades.train --config {input.cfg} --out $(dirname {output}) --no-progress > {log} 2>&1"
