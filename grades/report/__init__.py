"""Tables and figures, built only from run directories (the run contract).

    python -m grades.report tables  --runs results/runs/<profile> --out results/tables/<profile>
    python -m grades.report figures --runs results/runs/<profile> --out figures/<profile>
    python -m grades.report compare --runs results/runs/<profile> --tables results/tables/<profile> \
        --figures figures/<profile>           (comparison.{csv,md}, pareto_<model>.{png,pdf})
"""
