# Helpers shared by the rules (no rules here: snakemake --lint wants them apart).


def run_dir(run):
    return f"{RESULTS}/{run.model}/{run.slug}/seed{run.seed}"


def _run(wc):
    return gw.PlannedRun(wc.model, gw.setting_by_slug(W, wc.setting), int(wc.seed))


def _model_dir(model):
    return f"{CACHE}/models/{model}"


def _data_dir(model):
    return f"{CACHE}/data/{W['models'][model]['dataset']}"


def _eval_args(wc):
    return gw.eval_args(W, wc.model)


def _tasks(model):
    return ",".join(gw.eval_tasks(W, model))


def _res(rule, key):
    """A resource of the jobs of `rule` (train, evaluate, prepare) for the job's model,
    scaled by the model's size (grades.workflow.job_resources)."""
    return lambda wc: gw.job_resources(W, wc.model, rule)[key]


def _threads(rule):
    """cpus of the job (jobs.<rule>), or every core when it says 0 (--cores, at most this host's)."""

    def threads(wc):
        n = gw.job_resources(W, wc.model, rule)["cpus"] if hasattr(wc, "model") else W["jobs"][rule]["cpus"]
        if n:
            return n
        try:
            return min(workflow.cores, os.cpu_count() or 1)
        except WorkflowError:  # a cluster run without --cores
            return 1

    return threads


def _weights(wc, input):
    """--model/--adapter arguments of grades.evaluate for one run."""
    run_out = os.path.dirname(input.train[0])
    if W["settings"][gw.setting_by_slug(W, wc.setting)]["mode"] == "lora":
        return f"--model {input.model} --adapter {run_out}/adapter"
    return f"--model {run_out}/model"


def _all_evals():
    evals = [f"{run_dir(r)}/eval.json" for r in RUNS]
    evals += [f"{RESULTS}/{m}/base/eval.json" for m in gw.enabled_models(W) if W["models"][m]["eval_base"]]
    return evals
