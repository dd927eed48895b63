# lm-eval on the fine-tuned model or adapter, and on the base model.


def _eval_args():
    e = W["eval"]
    limit = f"--limit {e['limit']}" if e["limit"] else ""
    return (f"--backend {e['backend']} --batch-size {e['batch_size']} --dtype {e['dtype']} "
            f"--num-fewshot {e['num_fewshot']} --device {e['device']} {limit}")


def _tasks(model):
    d = W["datasets"][W["models"][model]["dataset"]]
    return ",".join(d["eval_tasks"] + d["lm_eval_tasks"])


rule evaluate:
    input:
        train=rules.train.output,
        model=lambda wc: _model_dir(wc.model),
        data=lambda wc: _data_dir(wc.model),
    output:
        f"{RESULTS}/{{model}}/{{setting}}/seed{{seed}}/eval.json",
    params:
        weights=lambda wc, input: (
            f"--model {input.model} --adapter $(dirname {input.train})/adapter"
            if W["settings"][gw.setting_by_slug(W, wc.setting)]["mode"] == "lora"
            else f"--model $(dirname {input.train})/model"
        ),
        tasks=lambda wc: _tasks(wc.model),
        args=_eval_args(),
    log:
        f"{LOGS}/evaluate/{{model}}/{{setting}}/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/{{setting}}/seed{{seed}}.tsv"
    threads: workflow.cores
    shell:
        "python -m grades.evaluate {params.weights} --tasks {params.tasks} --data {input.data} "
        "--out {output} {params.args} > {log} 2>&1"


rule evaluate_base:
    input:
        model=lambda wc: _model_dir(wc.model),
        data=lambda wc: _data_dir(wc.model),
    output:
        f"{RESULTS}/{{model}}/base/eval.json",
    params:
        tasks=lambda wc: _tasks(wc.model),
        args=_eval_args(),
    log:
        f"{LOGS}/evaluate/{{model}}/base.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/base.tsv"
    threads: workflow.cores
    shell:
        "python -m grades.evaluate --model {input.model} --tasks {params.tasks} --data {input.data} "
        "--out {output} {params.args} > {log} 2>&1"
