"""The calibration probe: GradES that records and never freezes, and the run config that runs it.

The probe is the user's run with its method replaced by ``grades-probe``
(:class:`ProbeGradES`, registered lazily in :data:`grades.methods.REGISTRY`): GradES's
signal, grace period and schedule, tau = 0 (an L1 norm is never < 0), stopped after
``probe_steps``. :func:`grades_params` reads the GradES parameters of any run config
(variants keep their default signal), :func:`workflow_run_config` builds the run
config of one (model, setting) of a workflow config.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import ConfigError, closest
from ..methods.base import Decision
from ..methods.grades import GradES
from .errors import CalibrationError

PROBE_METHOD = "grades-probe"


class ProbeGradES(GradES):
    """GradES that records its signal, never freezes (tau = 0) and stops after ``probe_steps``.

    The grace period and the schedule still refer to the planned steps, so the probe's
    signals are those of the first ``probe_steps`` steps of the real run."""

    name = PROBE_METHOD

    def __init__(self, probe_steps: int | None = None, **params) -> None:
        if probe_steps is not None and (isinstance(probe_steps, bool) or not isinstance(probe_steps, int)
                                        or probe_steps < 1):
            raise ConfigError(f"method '{self.name}': probe_steps = {probe_steps!r} must be an integer >= 1")
        params = {**params, "tau": 0.0, "language_tau": None, "vision_tau": None, "record_signals": True}
        super().__init__(**params)
        self.probe_steps = probe_steps

    @classmethod
    def config_fields(cls) -> list[str]:
        return [*super().config_fields(), "probe_steps"]

    def after_optimizer_step(self, step: int, loss: float | None = None) -> Decision | None:
        decision = super().after_optimizer_step(step, loss)
        if self.probe_steps is not None and step >= self.probe_steps:
            decision = decision or Decision()
            decision.stop = True
            decision.reason = f"calibration probe: ran {step} of {self.ctx.planned_steps} planned steps"
        return decision

    def summary(self) -> dict:
        return {**super().summary(), "probe_steps": self.probe_steps}


def grades_params(cfg: dict) -> tuple[dict, str | None]:
    """GradES parameters of a run config's method (defaults if it is not GradES), and a note.

    GradES variants (``grades-v1``, ``grades-weight``, ...) keep their default signal;
    ``grades-official`` (the released package) is probed with the equivalent
    ``weight_delta_l1`` signal."""
    from ..methods import get_method_class

    m = cfg.get("method", "none")
    m = {"name": m} if isinstance(m, str) else dict(m)
    name = m.pop("name", "none")
    m.pop("probe_steps", None)
    if name == PROBE_METHOD:
        return m, None
    try:
        cls = get_method_class(name)
    except ConfigError:
        cls = None
    if isinstance(cls, type) and issubclass(cls, GradES):
        default_signal = getattr(cls, "default_signal", None)
        if default_signal and "signal" not in m:
            m["signal"] = default_signal
        return m, None
    if name == "grades-official":
        p = {"signal": "weight_delta_l1", "alpha": m.get("alpha", 0.3), "check_interval": m.get("compute_interval", 1)}
        return p, ("the run's method is grades-official (the released package): probed with our equivalent "
                   "weight_delta_l1 signal; the released code's grace period is floor(alpha * T), not ceil, and its "
                   "first measurement of a matrix is 0.0")
    return {}, f"the run's method is '{name}'; the probe uses GradES with default parameters"


def probe_config(cfg: dict, probe_steps: int) -> dict:
    """The run config of the probe: same run, method GradES that never freezes, stopped early."""
    from ..train import load_run_config

    params, _ = grades_params(cfg)
    params = {k: v for k, v in params.items() if k not in ("tau", "language_tau", "vision_tau", "max_frozen_ratio")}
    rc = copy.deepcopy(cfg)
    rc["method"] = {"name": PROBE_METHOD, **params, "probe_steps": int(probe_steps)}
    rc["save_model"] = False
    rc["checkpoint_every"] = None
    rc["name"] = f"{cfg.get('name', 'run')} (calibration probe)"
    return load_run_config(rc)


def workflow_run_config(path: str | Path, model: str | None, setting: str | None,
                        cache: str | Path | None = None) -> tuple[dict, str, str]:
    """(run config, model, setting) for one (model, setting) of a workflow config, first seed."""
    from .. import workflow as gw

    p = Path(path)
    W = gw.load(gw.read_config(p))
    models = list(W["models"])
    if model is None:
        if len(models) != 1:
            raise CalibrationError(f"--model: the workflow config has several models; choose one of {models}")
        model = models[0]
    if model not in W["models"]:
        raise CalibrationError(f"--model = '{model}' is not a model of {p}{closest(model, models)}; known: {models}")
    allowed = [r.setting for r in gw.runs(W) + gw.compare_runs(W) if r.model == model]
    allowed = list(dict.fromkeys(allowed))
    if setting is None:
        def is_grades(s):
            meth = W["settings"][s]["method"]
            return (meth if isinstance(meth, str) else meth.get("name")) == "grades"

        cands = [s for s in allowed if is_grades(s)]
        if not cands:
            raise CalibrationError(f"--setting: model '{model}' runs no GradES setting; choose one of {allowed}")
        setting = cands[0]
    if setting not in allowed:
        raise CalibrationError(f"--setting = '{setting}' is not a setting model '{model}' runs"
                               f"{closest(setting, allowed)}; known: {allowed}")
    root = Path(cache) if cache is not None else Path("cache") / W["profile"]
    model_dir = root / "models" / model
    data_dir = root / "data" / W["models"][model]["dataset"]
    for what, d, probe in (("model", model_dir, "config.json"), ("dataset", data_dir, "train.jsonl")):
        if not (d / probe).exists():
            raise CalibrationError(
                f"prepared {what} not found: {d} (no {probe}); prepare it first, e.g.\n"
                f"  snakemake --cores all --configfile {path} {d}")
    rc = gw.run_config(W, gw.PlannedRun(model, setting, W["seeds"][0]), str(model_dir), str(data_dir))
    return rc, model, setting
