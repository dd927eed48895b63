"""``grades-official``: the released PyPI package ``grades==1.0.6``, run unchanged as a peer.

The released package is also imported as ``grades``, which is our package's name, so
it is installed into its own folder and loaded from there under another module name
(:data:`MODULE_NAME`; its submodules use relative imports and load as
``MODULE_NAME.<submodule>``; ``sys.modules['grades']`` is never touched)::

    python -m pip install --no-deps --target .peers/grades_official grades==1.0.6

(``scripts/setup.sh`` runs this in a checkout; an installed ``grades`` looks for
``.peers/grades_official`` in the working directory; the environment variable
``GRADES_OFFICIAL_DIR`` moves the folder.) The peer is imported when the method is bound
to a model, not when it is built: a config that names ``grades-official`` validates
without it (the workflow parses and plans its runs on a fresh clone), and only running
such a run needs it, failing with the install command.

What the released ``GradEarlyStoppingCallback`` decides (read from its source): at
every ``on_step_end`` whose global step is a multiple of ``compute_interval`` k, for
each tracked matrix still trainable (``q/k/v/o_proj``, ``gate/up/down_proj`` of
``model.layers`` or a PEFT model's layers; under LoRA only the adapter named
"default") it computes ||W_t - W_{t-k}||_1 (LoRA: ||dA||_1 + ||dB||_1) and freezes the
matrix when ``step >= int(alpha * max_steps)`` and the change is below ``tau``; it
asks to stop once the frozen share of its tracked matrices reaches max_frozen_ratio.

The adapter drives it with the objects it expects — a real ``TrainerState``
(``max_steps`` = planned steps, ``global_step`` = the optimizer step just taken), a real
``TrainerControl`` and an arguments object carrying ``output_dir`` — calling
``on_train_begin`` at bind time, ``on_step_end`` in ``after_optimizer_step`` and
``on_train_end`` at the end. The matrices it freezes in that call (it sets
``requires_grad=False`` itself) come back as a :class:`Decision`, mapped to our
components by module identity, so events, optimizer-state release and accounting are
the same as for every other method; ``control.should_training_stop`` becomes
``Decision.stop``. Its per-check values are exposed as ``signal_history`` (NaN where it
did not measure).

Known differences from our ``grades-weight`` (``signal: weight_delta_l1``):

* its first measurement of a matrix returns 0.0 (it only caches W), which counts as
  converged if the grace period is over; ours is undefined (NaN) and never freezes.
  Identical decisions therefore need int(alpha * T) > k (the first check is at step k);
* grace: int(alpha * T) (floor) here, ceil(alpha * T) in ours: equal when alpha * T is
  an integer;
* it sums a float32 L1 norm over the concatenated parameters, ours float64 sums of
  per-parameter float32 norms: values agree to about 1e-6 relative.

Parameters: the released config's fields tau (default 1e-4), alpha (0.3),
max_frozen_ratio (1.0), compute_interval (1), target_components, auto_detect_mode
(true), save_freezing_history (false) and output_dir (where that history goes).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch

from ..config import ConfigError
from .base import Decision, MethodContext, StoppingMethod
from .bottomk import bad_param, is_number

PEER_VERSION = "1.0.6"
MODULE_NAME = "grades_official_1_0_6"
#: the source checkout this module lives in (None when grades is installed)
REPO_ROOT: Path | None = Path(__file__).resolve().parents[2]
if not (REPO_ROOT / "pyproject.toml").exists():
    REPO_ROOT = None


class PeerMissingError(ConfigError):
    """The released package is not installed in its peer folder."""


def peer_dir() -> Path:
    """``$GRADES_OFFICIAL_DIR``, else ``.peers/grades_official`` of the checkout (of the working
    directory when grades is installed)."""
    if os.environ.get("GRADES_OFFICIAL_DIR"):
        return Path(os.environ["GRADES_OFFICIAL_DIR"])
    return (REPO_ROOT if REPO_ROOT is not None else Path.cwd()) / ".peers" / "grades_official"


def install_command(target: Path | None = None) -> str:
    return f"python -m pip install --no-deps --target {target or peer_dir()} grades=={PEER_VERSION}"


def load_official(target: Path | None = None) -> ModuleType:
    """The released package, imported from ``target`` as :data:`MODULE_NAME`."""
    target = Path(target) if target is not None else peer_dir()
    init = target / "grades" / "__init__.py"
    if not init.exists():
        raise PeerMissingError(f"method 'grades-official' needs the released grades=={PEER_VERSION} in {target} "
                               f"(not found: {init}). Install it with:\n    {install_command(target)}\n"
                               f"(in a checkout, `bash scripts/setup.sh` does this)")
    cached = sys.modules.get(MODULE_NAME)
    if cached is not None:
        if Path(cached.__file__).resolve() != init.resolve():
            raise PeerMissingError(f"method 'grades-official': the released package is already loaded from "
                                   f"{cached.__file__}, not {init}; use one peer folder per process")
        return cached
    meta = target / f"grades-{PEER_VERSION}.dist-info" / "METADATA"
    if not meta.exists():
        found = sorted(p.name for p in target.glob("grades-*.dist-info"))
        raise PeerMissingError(f"method 'grades-official': {target} holds {found or 'an unknown version'}, "
                               f"not grades=={PEER_VERSION}. Reinstall with:\n    "
                               f"rm -rf {target} && {install_command(target)}")
    spec = importlib.util.spec_from_file_location(MODULE_NAME, init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for name in [n for n in sys.modules if n == MODULE_NAME or n.startswith(MODULE_NAME + ".")]:
            del sys.modules[name]
        raise
    return module


class OfficialGradES(StoppingMethod):
    name = "grades-official"
    supports_sharding = False  # the released code reads whole gradients and weights

    def __init__(self, tau: float = 1e-4, alpha: float = 0.3, max_frozen_ratio: float = 1.0,
                 compute_interval: int = 1, target_components: list[str] | None = None,
                 auto_detect_mode: bool = True, save_freezing_history: bool = False,
                 output_dir: str | None = None) -> None:
        n = self.name
        if not is_number(tau) or tau <= 0:
            raise bad_param(n, "tau", tau, "a number > 0 (the released code rejects 0)")
        if not is_number(alpha) or not 0 <= alpha < 1:
            raise bad_param(n, "alpha", alpha, "in [0, 1)")
        if not is_number(max_frozen_ratio) or not 0 < max_frozen_ratio <= 1:
            raise bad_param(n, "max_frozen_ratio", max_frozen_ratio, "in (0, 1]")
        if isinstance(compute_interval, bool) or not isinstance(compute_interval, int) or compute_interval < 1:
            raise bad_param(n, "compute_interval", compute_interval, "an integer >= 1")
        if target_components is not None and (not isinstance(target_components, list) or
                                              not all(isinstance(x, str) for x in target_components)):
            raise bad_param(n, "target_components", target_components,
                            "a list of projection names (the 4 attention names first: the released code "
                            "slices [:4] / [4:])")
        for field, v in (("auto_detect_mode", auto_detect_mode), ("save_freezing_history", save_freezing_history)):
            if not isinstance(v, bool):
                raise bad_param(n, field, v, "true or false")
        if output_dir is not None and not isinstance(output_dir, str):
            raise bad_param(n, "output_dir", output_dir, "a directory path or null")
        self.params = dict(tau=float(tau), alpha=float(alpha), max_frozen_ratio=float(max_frozen_ratio),
                           compute_interval=compute_interval, auto_detect_mode=auto_detect_mode,
                           save_freezing_history=save_freezing_history, output_dir=output_dir)
        if target_components is not None:
            self.params["target_components"] = list(target_components)
        self._history: list[tuple[int, torch.Tensor]] = []
        self.module: ModuleType | None = None  # the released package, imported by bind()

    # ------------------------------------------------------------------ setup
    def bind(self, ctx: MethodContext) -> None:
        """Import the released package (:class:`PeerMissingError`, with the install command, when
        it is missing) and start its callback on the model."""
        self.module = load_official()
        super().bind(ctx)
        from transformers import TrainerControl, TrainerState

        gem = self.module.gradient_early_stopping
        self.callback = gem.GradEarlyStoppingCallback(gem.GradEarlyStoppingConfig(**self.params))
        self.args = SimpleNamespace(output_dir=self.params["output_dir"])
        self.state = TrainerState(max_steps=ctx.planned_steps, global_step=0)
        self.callback.on_train_begin(self.args, self.state, TrainerControl(), model=ctx.model)
        by_module = {id(c.module): i for i, c in enumerate(ctx.components)}
        self.key_to_index: dict[str, int] = {}
        unmapped = []
        for key in self.callback.component_stats:
            mod = self.callback._get_component_by_key(ctx.model, key)
            if mod is None or id(mod) not in by_module:
                unmapped.append(key)
            else:
                self.key_to_index[key] = by_module[id(mod)]
        if unmapped:
            raise RuntimeError(f"grades-official tracks matrices that are not among our components: {unmapped[:5]}"
                               f"{' ...' if len(unmapped) > 5 else ''}")

    # ----------------------------------------------------------------- hooks
    def after_optimizer_step(self, step: int, loss: float | None = None) -> Decision | None:
        from transformers import TrainerControl

        cb = self.callback
        before = len(cb.frozen_events)
        self.state.global_step = step
        control = TrainerControl()
        cb.on_step_end(self.args, self.state, control, model=self.ctx.model)
        self._record(step)
        new = [e["component"] for e in cb.frozen_events[before:]]
        if not new and not control.should_training_stop:
            return None
        tau = self.params["tau"]
        idx = [self.key_to_index[k] for k in new]
        values = {self.key_to_index[k]: self._last_change(k, step) for k in new}
        d = Decision(freeze=idx, values=values, taus={i: tau for i in idx})
        if control.should_training_stop:
            n, m = len(cb.frozen_components), len(cb.component_stats)
            d.stop = True
            d.reason = ("all components frozen" if n == m and m == len(self.ctx.components) else
                        f"released grades: {n}/{m} tracked components frozen "
                        f"(max_frozen_ratio={self.params['max_frozen_ratio']})")
        return d

    def on_train_end(self) -> None:
        from transformers import TrainerControl

        self.callback.on_train_end(self.args, self.state, TrainerControl(), model=self.ctx.model)

    def _last_change(self, key: str, step: int) -> float:
        hist = self.callback.component_stats[key].change_history
        return float(hist[-1][1]) if hist and hist[-1][0] == step else float("nan")

    def _record(self, step: int) -> None:
        values = torch.full((len(self.ctx.components),), math.nan, dtype=torch.float64)
        measured = False
        for key, i in self.key_to_index.items():
            v = self._last_change(key, step)
            if not math.isnan(v):
                values[i], measured = v, True
        if measured:
            self._history.append((step, values.to(torch.float32)))

    # -------------------------------------------------------------- outputs
    def signal_history(self) -> list[tuple[int, torch.Tensor]]:
        return self._history

    def summary(self) -> dict:
        cb = self.callback
        return {"method": self.name, "peer": f"grades=={PEER_VERSION}", "config": dict(self.params),
                "mode": cb.mode, "tracked": len(cb.component_stats),
                "untracked_components": len(self.ctx.components) - len(self.key_to_index),
                "grace_steps": int(self.ctx.planned_steps * self.params["alpha"]),
                "all_components_frozen_at_step": cb.all_components_frozen_at_step}

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        cb = self.callback
        stats = {}
        for key, s in cb.component_stats.items():
            cache = s.weight_cache
            if isinstance(cache, dict):
                cache = {k: v.detach().cpu().clone() for k, v in cache.items()}
            elif cache is not None:
                cache = cache.detach().cpu().clone()
            stats[key] = {"frozen": s.frozen, "frozen_at_step": s.frozen_at_step,
                          "change_history": list(s.change_history), "weight_cache": cache,
                          "total_change_accumulated": s.total_change_accumulated}
        return {"stats": stats, "frozen_events": [dict(e) for e in cb.frozen_events],
                "all_components_frozen_at_step": cb.all_components_frozen_at_step,
                "current_training_step": cb.current_training_step,
                "history": [(s, v.clone()) for s, v in self._history]}

    def load_state_dict(self, state: dict) -> None:
        cb = self.callback
        if set(state["stats"]) != set(cb.component_stats):
            raise ValueError("grades-official state was saved for a different set of tracked components")
        for key, saved in state["stats"].items():
            s = cb.component_stats[key]
            s.frozen, s.frozen_at_step = saved["frozen"], saved["frozen_at_step"]
            s.change_history.clear()
            s.change_history.extend(saved["change_history"])
            s.total_change_accumulated = saved["total_change_accumulated"]
            params = list(self.ctx.components[self.key_to_index[key]].params)
            dev = params[0].device if params else torch.device("cpu")
            cache = saved["weight_cache"]
            if isinstance(cache, dict):
                cache = {k: v.to(dev) for k, v in cache.items()}
            elif cache is not None:
                cache = cache.to(dev)
            s.weight_cache = cache
            if s.frozen:
                cb.frozen_components.add(key)
        cb.frozen_events = [dict(e) for e in state["frozen_events"]]
        cb.all_components_frozen_at_step = state["all_components_frozen_at_step"]
        cb.current_training_step = state["current_training_step"]
        self._history = [(s, v.clone()) for s, v in state["history"]]
