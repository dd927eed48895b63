"""Tables and figures, built only from run directories (the run contract).

    python -m grades.report tables  --runs results/runs/<profile> --out results/tables/<profile>
    python -m grades.report figures --runs results/runs/<profile> --out figures/<profile>
"""
