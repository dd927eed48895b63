# Helpers shared by the rules (no rules here: snakemake --lint wants them apart).


def run_dir(run):
    return f"{RESULTS}/{run.model}/{run.slug}/seed{run.seed}"


def _run(wc):
    return gw.Run(wc.model, gw.setting_by_slug(W, wc.setting), int(wc.seed))


def _model_dir(model):
    return f"{CACHE}/models/{model}"


def _data_dir(model):
    return f"{CACHE}/data/{W['models'][model]['dataset']}"


def _eval_args():
    e = W["eval"]
    limit = f"--limit {e['limit']}" if e["limit"] else ""
    return (f"--backend {e['backend']} --batch-size {e['batch_size']} --dtype {e['dtype']} "
            f"--num-fewshot {e['num_fewshot']} --device {e['device']} {limit}")


def _tasks(model):
    d = W["datasets"][W["models"][model]["dataset"]]
    return ",".join(d["eval_tasks"] + d["lm_eval_tasks"])


def _weights(wc, input):
    """--model/--adapter arguments of grades.evaluate for one run."""
    run_out = os.path.dirname(input.train[0])
    if W["settings"][gw.setting_by_slug(W, wc.setting)]["mode"] == "lora":
        return f"--model {input.model} --adapter {run_out}/adapter"
    return f"--model {run_out}/model"


def _all_evals():
    evals = [f"{run_dir(r)}/eval.json" for r in RUNS]
    evals += [f"{RESULTS}/{m}/base/eval.json" for m, mc in W["models"].items() if mc["eval_base"]]
    return evals


def _threads(model):
    """Threads of a model's jobs: models.<m>.threads, else every core."""
    return W["models"][model]["threads"] or workflow.cores
