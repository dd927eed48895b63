# lm-eval on the fine-tuned model or adapter, and on the base model.
# Vision-language models (grades.workflow.is_vlm, decided at parse time) go through
# grades.vlm's own multiple-choice scorer instead (evaluate_vlm, evaluate_vlm_base):
# lm-eval's hf-multimodal backend has no log-likelihood for requests with images.

VLMS = gw.vlm_models(W)
LM_MODELS = gw.model_regex([m for m in W["models"] if m not in VLMS])
VLM_MODELS = gw.model_regex(VLMS)


rule evaluate:
    input:
        train=rules.train.output,
        model=lambda wc: _model_dir(wc.model),
        data=lambda wc: _data_dir(wc.model),
    output:
        f"{RESULTS}/{{model}}/{{setting}}/seed{{seed}}/eval.json",
    log:
        f"{LOGS}/evaluate/{{model}}/{{setting}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/{{setting}}/seed{{seed}}.tsv"
    wildcard_constraints:
        model=LM_MODELS,
    conda:
        ENV
    threads: _threads("evaluate")
    resources:
        gpu=_res("evaluate", "gpu"),
        nodes=_res("evaluate", "nodes"),  # tensor parallelism (vllm) or a spread model (hf): one node
        mem_mb=_res("evaluate", "mem_mb"),
        runtime=_res("evaluate", "runtime"),
        cpus_per_task=_res("evaluate", "cpus"),  # SLURM --cpus-per-task (0: the plugin uses threads)
    params:
        env=job_env,
        py=PY,
        weights=_weights,
        tasks=lambda wc: _tasks(wc.model),
        args=_eval_args,
    shell:
        "{params.env} {params.py} -m grades.evaluate {params.weights} --tasks {params.tasks} --data {input.data} "
        "--out {output} --samples-out $(dirname {output})/samples.jsonl --threads {threads} {params.args} > {log} 2>&1"


rule evaluate_base:
    input:
        model=lambda wc: _model_dir(wc.model),
        data=lambda wc: _data_dir(wc.model),
    output:
        f"{RESULTS}/{{model}}/base/eval.json",
    log:
        f"{LOGS}/evaluate/{{model}}/base.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/base.tsv"
    wildcard_constraints:
        model=LM_MODELS,
    conda:
        ENV
    threads: _threads("evaluate")
    resources:
        gpu=_res("evaluate", "gpu"),
        nodes=_res("evaluate", "nodes"),  # tensor parallelism (vllm) or a spread model (hf): one node
        mem_mb=_res("evaluate", "mem_mb"),
        runtime=_res("evaluate", "runtime"),
        cpus_per_task=_res("evaluate", "cpus"),  # SLURM --cpus-per-task (0: the plugin uses threads)
    params:
        env=job_env,
        py=PY,
        tasks=lambda wc: _tasks(wc.model),
        args=_eval_args,
    shell:
        "{params.env} {params.py} -m grades.evaluate --model {input.model} --tasks {params.tasks} --data {input.data} "
        "--out {output} --samples-out $(dirname {output})/samples.jsonl --threads {threads} {params.args} > {log} 2>&1"


rule evaluate_vlm:
    input:
        train=rules.train.output,
        model=lambda wc: _model_dir(wc.model),
        data=lambda wc: _data_dir(wc.model),
    output:
        f"{RESULTS}/{{model}}/{{setting}}/seed{{seed}}/eval.json",
    log:
        f"{LOGS}/evaluate/{{model}}/{{setting}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/{{setting}}/seed{{seed}}.tsv"
    wildcard_constraints:
        model=VLM_MODELS,
    conda:
        ENV
    threads: _threads("evaluate")
    resources:
        gpu=_res("evaluate", "gpu"),
        nodes=_res("evaluate", "nodes"),  # tensor parallelism (vllm) or a spread model (hf): one node
        mem_mb=_res("evaluate", "mem_mb"),
        runtime=_res("evaluate", "runtime"),
        cpus_per_task=_res("evaluate", "cpus"),  # SLURM --cpus-per-task (0: the plugin uses threads)
    params:
        env=job_env,
        py=PY,
        weights=_weights,
        args=lambda wc: gw.vlm_eval_args(W, wc.model),
    shell:
        "{params.env} {params.py} -m grades.vlm evaluate {params.weights} --data {input.data} --out {output} --samples-out $(dirname {output})/samples.jsonl "
        "--threads {threads} {params.args} > {log} 2>&1"


rule evaluate_vlm_base:
    input:
        model=lambda wc: _model_dir(wc.model),
        data=lambda wc: _data_dir(wc.model),
    output:
        f"{RESULTS}/{{model}}/base/eval.json",
    log:
        f"{LOGS}/evaluate/{{model}}/base.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/base.tsv"
    wildcard_constraints:
        model=VLM_MODELS,
    conda:
        ENV
    threads: _threads("evaluate")
    resources:
        gpu=_res("evaluate", "gpu"),
        nodes=_res("evaluate", "nodes"),  # tensor parallelism (vllm) or a spread model (hf): one node
        mem_mb=_res("evaluate", "mem_mb"),
        runtime=_res("evaluate", "runtime"),
        cpus_per_task=_res("evaluate", "cpus"),  # SLURM --cpus-per-task (0: the plugin uses threads)
    params:
        env=job_env,
        py=PY,
        args=lambda wc: gw.vlm_eval_args(W, wc.model),
    shell:
        "{params.env} {params.py} -m grades.vlm evaluate --model {input.model} --data {input.data} --out {output} --samples-out $(dirname {output})/samples.jsonl "
        "--threads {threads} {params.args} > {log} 2>&1"
