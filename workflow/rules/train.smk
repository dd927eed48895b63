# One fine-tuning run per (model, setting, seed).
#
# Checkpoints (run config `checkpoint_every`, e.g. `finetune: {checkpoint_every: 50}`) go to
# results/checkpoints/<profile>/..., outside the rule's outputs, so Snakemake keeps them
# when a job fails or is killed; rerunning the workflow resumes the run from the newest
# one. grades.train deletes them after success.


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
    params:
        py=PY,
        out=lambda wc: run_dir(_run(wc)),
        ckpt=lambda wc: f"results/checkpoints/{PROFILE}/{wc.model}/{wc.setting}/seed{wc.seed}",
    log:
        f"{LOGS}/train/{{model}}/{{setting}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{model}}/{{setting}}/seed{{seed}}.tsv"
    threads: lambda wc: _threads(wc.model)
    resources:
        gpus=lambda wc: W["models"][wc.model]["gpus"],
    conda:
        ENV
    shell:
        "{params.py} -m grades.train --config {input.cfg} --out {params.out} --set threads={threads} "
        "--checkpoint-dir {params.ckpt} --no-progress > {log} 2>&1"
