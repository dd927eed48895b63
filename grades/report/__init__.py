"""Tables and figures, built only from run directories (the run contract), read through :mod:`grades.rundir`.

    python -m grades.report tables  --runs results/runs/<profile> --out results/tables/<profile>
    python -m grades.report figures --runs results/runs/<profile> --out figures/<profile>
    python -m grades.report compare --runs results/runs/<profile> --tables results/tables/<profile> \
        --figures figures/<profile>           (comparison.{csv,md}, pareto_<model>.{png,pdf})
    python -m grades.report multimodal --runs results/runs/<profile> --tables results/tables/<profile> \
        --figures figures/<profile>           (multimodal.{csv,md}, vlm_convergence.{png,pdf})
    python -m grades.report record --profile <profile>   (results/record/<profile>/ for the docs)

The rooms:

    runs            the tables' view of the runs: train and eval data frames, the planned runs' status
    tables          accuracy and efficiency tables
    paper           our numbers in the paper's layout, beside results/paper, per protocol
    splits          the split check: do the paper's values fit the items we scored?
    stats           paired differences, McNemar, equivalence, power, seeds, Wilson intervals
    paired          every setting against its baseline, item by item (samples.jsonl)
    speed           speedups with an interval, the same-work check
    claims          the tables' statistical columns (accuracy, speed, the paper's cells)
    record          results/record/<profile>/: tables, figures and a manifest for the docs
    compare         ranked comparison of stopping methods, Pareto figures
    multimodal      the vision-language table and convergence figure
    figures         which GradES figures are drawn from which runs (write_figures)
    signal_figures  fig1 (one layer's signals), fig4 (signal per matrix type)
    freeze_figures  fig3 (frozen fraction), freeze_heatmap (freeze step per matrix)
    plotting        the shared figure kit: new figure, atomic PNG + PDF, log axes, tau/grace lines
"""
