"""GradES configuration, validated on construction.

Every bad value raises :class:`ConfigError` naming the field, the value and the fix.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields

SIGNALS = ("grad_delta_l1", "grad_l1", "weight_delta_l1")
BUFFER_DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def closest(name: str, options) -> str:
    """' (did you mean 'x'?)' or '' — used by every 'unknown name' message (a name that differs
    only in case is the closest)."""
    options = [str(o) for o in options]
    same = [o for o in options if o.lower() == str(name).lower()]
    if same:
        return f" (did you mean '{same[0]}'?)"
    match = difflib.get_close_matches(str(name), options, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


@dataclass
class GradESConfig:
    """Parameters of the GradES rule.

    tau            threshold: a matrix whose signal falls below it is frozen.
    language_tau   overrides tau for the language model's matrices (VLMs).
    vision_tau     overrides tau for the vision tower's matrices (VLMs).
    alpha          grace period as a fraction of planned optimizer steps: no freezing
                   before step ceil(alpha * planned_steps). In [0, 1).
    signal         "grad_delta_l1" ||G_t - G_{t-1}||_1 (paper v3, default),
                   "grad_l1" ||G_t||_1 (paper v1),
                   "weight_delta_l1" ||W_t - W_{t-k}||_1 (released grades 1.0.6).
    normalize      divide each signal by the matrix's element count (tau then is a
                   per-element value, comparable across matrix sizes).
    check_interval measure and decide every k optimizer steps.
    max_frozen_ratio  stop training once this fraction of components is frozen.
    buffer_dtype   precision of the previous-gradient / weight snapshot buffers.
    sample_fraction   if set, estimate delta signals from a fixed random subset of
                   this fraction of each matrix's entries (scaled up), so the state
                   costs about 2 x sample_fraction of the tracked weights' bytes.
    record_signals keep the per-check signal history (for CSV output and figures).
    seed           seed of the sampled estimator's index choice.
    allow_untracked   start even if weight matrices inside the transformer blocks are not
                   tracked (grades.coverage): they keep training until the run stops, and
                   the summary's coverage report names them. Default false: GradES
                   refuses to start and names them.
    """

    tau: float | None = None
    language_tau: float | None = None
    vision_tau: float | None = None
    alpha: float = 0.3
    signal: str = "grad_delta_l1"
    normalize: bool = False
    check_interval: int = 1
    max_frozen_ratio: float = 1.0
    buffer_dtype: str = "float32"
    sample_fraction: float | None = None
    record_signals: bool = True
    seed: int = 0
    allow_untracked: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def bad(field: str, value, rule: str) -> ConfigError:
            return ConfigError(f"GradESConfig.{field} = {value!r} is invalid: {rule}")

        for name in ("tau", "language_tau", "vision_tau"):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise bad(name, v, "must be a finite number >= 0 (e.g. 1e-3)")
        if self.tau is None and (self.language_tau is None or self.vision_tau is None):
            if self.language_tau is None and self.vision_tau is None:
                raise bad("tau", None, "set tau, or language_tau and/or vision_tau")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha < 1:
            raise bad("alpha", self.alpha, "must be in [0, 1): the grace period as a fraction of planned steps")
        if self.signal not in SIGNALS:
            raise bad("signal", self.signal, f"must be one of {list(SIGNALS)}{closest(self.signal, SIGNALS)}")
        for name in ("normalize", "allow_untracked"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, getattr(self, name), "must be true or false")
        if isinstance(self.check_interval, bool) or not isinstance(self.check_interval, int) or self.check_interval < 1:
            raise bad("check_interval", self.check_interval, "must be an integer >= 1")
        r = self.max_frozen_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise bad("max_frozen_ratio", r, "must be in (0, 1]")
        if self.buffer_dtype not in BUFFER_DTYPES:
            raise bad("buffer_dtype", self.buffer_dtype,
                      f"must be one of {list(BUFFER_DTYPES)}{closest(self.buffer_dtype, BUFFER_DTYPES)}")
        s = self.sample_fraction
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1):
            raise bad("sample_fraction", s, "must be null or in (0, 1], e.g. 0.005")

    # ---------------------------------------------------------------- helpers
    def tau_for(self, tower: str) -> float:
        specific = self.vision_tau if tower == "vision" else self.language_tau
        value = specific if specific is not None else self.tau
        if value is None:
            raise ConfigError(f"GradESConfig: no threshold for the {tower} tower; set tau or {tower}_tau")
        return float(value)

    def grace_steps(self, planned_steps: int) -> int:
        """First optimizer step (1-based) at which a freeze may happen."""
        return max(1, math.ceil(self.alpha * planned_steps))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "GradESConfig") -> "GradESConfig":
        names = {f.name for f in fields(cls)}
        for key in d:
            if key not in names:
                raise ConfigError(f"{where}: unknown field '{key}'{closest(key, names)}; valid fields: {sorted(names)}")
        return cls(**d)
