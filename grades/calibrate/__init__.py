"""Propose a GradES threshold tau for a model from a short probe run: ``python -m grades.calibrate``.

tau does not transfer across models, sizes, learning rates or signal kinds; a probe
(the user's run, GradES recording its signal but never freezing) shows where each
weight matrix's signal goes, and the proposal is the tau that would leave a target
fraction of the matrices frozen at a target point of training. The rooms:

    signals   the signals table as a components x check-steps matrix, and what its run says
    propose   the tau search: GradES's freezing rule simulated on the signals
    probe     the probe method (``grades-probe``) and the run configs it runs under
    plot      calibration.png
    report    the YAML snippet, the summary, calibration.{json,txt,png}
    cli       the command line (``python -m grades.calibrate --help``)
"""

from .cli import main
from .errors import CalibrationError
from .plot import plot
from .probe import PROBE_METHOD, ProbeGradES, grades_params, probe_config, workflow_run_config
from .propose import (CAVEAT, TABLE_TARGETS, check_fraction, freeze_steps, grace_step, propose_tau, target_step,
                      tau_for_count, window_minima)
from .report import calibrate, snippet, summary_text
from .signals import REQUIRED_COLUMNS, SignalMatrix, run_info

__all__ = ["CAVEAT", "PROBE_METHOD", "REQUIRED_COLUMNS", "TABLE_TARGETS", "CalibrationError", "ProbeGradES",
           "SignalMatrix", "calibrate", "check_fraction", "freeze_steps", "grace_step", "grades_params", "main",
           "plot", "probe_config", "propose_tau", "run_info", "snippet", "summary_text", "target_step",
           "tau_for_count", "window_minima", "workflow_run_config"]
