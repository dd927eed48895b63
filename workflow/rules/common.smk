# Helpers shared by the rules (no rules here: snakemake --lint wants them apart).


def run_dir(run):
    return f"{RESULTS}/{run.model}/{run.slug}/seed{run.seed}"


def _run(wc):
    return gw.PlannedRun(wc.model, gw.setting_by_slug(W, wc.setting), int(wc.seed))


def _budget(wc):
    """A matched run's budget.json (checkpoint matched_budget); nothing for any other run."""
    run = _run(wc)
    return [f"{run_dir(run)}/budget.json"] if gw.matched_info(W, run.setting) else []


def _matched_train(wc, which):
    """train.json of the method's (which=0) or the baseline's (1) run a matched run is planned from."""
    return f"{run_dir(gw.matched_sources(W, _run(wc))[which])}/train.json"


def _matched_evals(wc):
    """eval.json of the matched runs whose budget (known once the methods' runs ended) is planned."""
    budgets = [checkpoints.matched_budget.get(model=r.model, setting=r.slug, seed=r.seed) for r in MATCHED_RUNS]
    return [f"{run_dir(r)}/eval.json" for r, b in zip(MATCHED_RUNS, budgets) if gw.budget_planned(b.output[0])]


def _select(wc, input):
    """--select of the compare job: its runs, the matched ones included."""
    runs = [f"{r.model}/{r.slug}/seed{r.seed}" for r in COMPARE_RUNS]
    runs += [gw.run_key(p) for p in input.matched]
    return " ".join(gw.quote(r) for r in runs)


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


def job_env(wildcards, threads):
    """The environment every job's command starts with (`{params.env}`): torch, OpenMP and MKL
    use the job's `threads`, and idle OpenMP threads sleep instead of spinning, so a job does
    not slow to a crawl when another process shares its cores. Under --use-conda, PYTHONPATH
    points at the checkout so that the job imports this grades."""
    env = f"OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"
    if USE_CONDA:  # the conda environment has the dependencies; grades comes from this checkout
        env += f" PYTHONPATH={gw.quote(gw.conda_pythonpath())}${{PYTHONPATH:+:$PYTHONPATH}}"
    return env


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


def all_cores(wc):
    """Every core Snakemake may use (--cores); 1 when it has none (--report, a cluster run)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


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


# ------------------------------------------------------------ the HTML report
# `snakemake --report report.html [all compare]`: tables and figures are marked with report(),
# grouped by what they show (category) and the profile (subcategory), listed by file name;
# captions in workflow/report/.


def report_table(path, caption):
    """An accuracy or efficiency table (caption workflow/report/<caption>.rst)."""
    return report(
        path,
        caption=f"../report/{caption}.rst",
        category="Accuracy and efficiency",
        subcategory=PROFILE,
        labels={"file": os.path.basename(path)},
    )


def report_figure(path):
    """A figure of the `figures` rule (caption workflow/report/<figure name>.rst)."""
    name = os.path.splitext(os.path.basename(path))[0]
    return report(
        path,
        caption=f"../report/{name}.rst",
        category="Figures",
        subcategory=PROFILE,
        labels={"file": os.path.basename(path)},
    )


def report_multimodal(path):
    """The VLM table or convergence figure (caption workflow/report/multimodal.rst)."""
    return report(
        path,
        caption="../report/multimodal.rst",
        category="Multimodal",
        subcategory=PROFILE,
        labels={"file": os.path.basename(path)},
    )


def report_comparison(path):
    """The comparison table or a Pareto figure (caption workflow/report/comparison.rst)."""
    return report(
        path,
        caption="../report/comparison.rst",
        category="Comparison",
        subcategory=PROFILE,
        labels={"file": os.path.basename(path)},
    )
