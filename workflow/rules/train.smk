# One fine-tuning run per (model, setting, seed).
#
# Checkpoints (run config `checkpoint_every`, e.g. `finetune: {checkpoint_every: 50}`) go to
# results/checkpoints/<profile>/..., outside the rule's outputs, so Snakemake keeps them
# when a job fails or is killed; rerunning the workflow resumes the run from the newest
# one. grades.train deletes them after success.
#
# A model with `gpus: N > 1` trains with one process per GPU, sharded with FSDP2 (launcher:
# torchrun or accelerate, grades.workflow.train_launcher), on one node; with more GPUs than
# jobs.gpus_per_node, on several nodes (srun + torchrun with a rendezvous from SLURM's
# environment). Resources (gpu, nodes, mem_mb, runtime, threads) come from the workflow
# config's `jobs` block scaled by the model's size_b. The Snakefile refuses a profile in
# which a run cannot fit its GPUs' memory (python -m grades.workflow plan CONFIG).


rule run_config:
    output:
        f"{RESULTS}/{{model}}/{{setting}}/seed{{seed}}/run.yaml",
    log:
        f"{LOGS}/run_config/{{model}}/{{setting}}/seed{{seed}}.log",
    params:
        cfg=lambda wc: gw.run_config(W, _run(wc), _model_dir(wc.model), _data_dir(wc.model)),
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
    conda:
        ENV
    threads: _threads("train")
    resources:
        gpu=_res("train", "gpu"),
        nodes=_res("train", "nodes"),  # one node per torchrun --standalone; more for gpus > jobs.gpus_per_node
        tasks=_res("train", "tasks"),  # several nodes: one launcher (srun) task per node
        slurm_extra=_res("train", "slurm_extra"),  # several nodes: --gpus-per-node
        mem_mb=_res("train", "mem_mb"),
        runtime=_res("train", "runtime"),
        cpus_per_task=_res("train", "cpus"),  # SLURM --cpus-per-task (0: the plugin uses threads)
    params:
        env=job_env,
        launch=lambda wc: gw.train_launcher(W, wc.model, PY),  # torchrun when gpus > 1
        out=lambda wc: run_dir(_run(wc)),
        ckpt=lambda wc: f"results/checkpoints/{PROFILE}/{wc.model}/{wc.setting}/seed{wc.seed}",
    shell:
        "{params.env} {params.launch} --config {input.cfg} --out {params.out} --set threads={threads} "
        "--checkpoint-dir {params.ckpt} --no-progress > {log} 2>&1"
