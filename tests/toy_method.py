"""A toy stopping method, registered from outside the package (what a user would write).

It freezes the first tracked component before optimizer step ``freeze_step`` and stops
training after step ``stop_step``; tests run it through ``grades.train.run``.
"""

from __future__ import annotations

from grades.methods import Decision, StoppingMethod, register


class ToyMethod(StoppingMethod):
    name = "toy"

    def __init__(self, freeze_step: int = 2, stop_step: int = 3) -> None:
        self.freeze_step, self.stop_step = freeze_step, stop_step
        self.calls = 0

    def before_optimizer_step(self, step: int) -> Decision | None:
        self.calls += 1
        if step == self.freeze_step:
            return Decision(freeze=[0], values={0: 0.5}, taus={0: 1.0})
        return None

    def after_optimizer_step(self, step: int, loss: float | None = None) -> Decision | None:
        if step == self.stop_step:
            return Decision(stop=True, reason="toy stop")
        return None

    def summary(self) -> dict:
        return {"method": self.name, "freeze_step": self.freeze_step, "stop_step": self.stop_step,
                "calls": self.calls}

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]


register("toy", ToyMethod)
