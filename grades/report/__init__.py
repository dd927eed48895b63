"""Tables and figures, built only from run directories (the run contract), read through :mod:`grades.rundir`.

    python -m grades.report tables  --runs results/runs/<profile> --out results/tables/<profile>
    python -m grades.report figures --runs results/runs/<profile> --out figures/<profile>
    python -m grades.report compare --runs results/runs/<profile> --tables results/tables/<profile> \
        --figures figures/<profile>           (comparison.{csv,md}, pareto_<model>.{png,pdf})
    python -m grades.report multimodal --runs results/runs/<profile> --tables results/tables/<profile> \
        --figures figures/<profile>           (multimodal.{csv,md}, vlm_convergence.{png,pdf})

The rooms:

    runs            the tables' view of the runs: train and eval data frames, the planned runs' status
    tables          accuracy and efficiency tables
    paper           our numbers in the paper's layout, beside results/paper, per protocol
    splits          the split check: do the paper's values fit the items we scored?
    compare         ranked comparison of stopping methods, Pareto figures
    multimodal      the vision-language table and convergence figure
    figures         which GradES figures are drawn from which runs (write_figures)
    signal_figures  fig1 (one layer's signals), fig4 (signal per matrix type)
    freeze_figures  fig3 (frozen fraction), freeze_heatmap (freeze step per matrix)
    plotting        the shared figure kit: new figure, atomic PNG + PDF, log axes, tau/grace lines
"""
