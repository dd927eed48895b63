"""How training shows its progress: a tqdm bar, or else (logs, batch jobs) a log line every 5% of the steps."""

from __future__ import annotations

import sys


class Progress:
    """Progress of the steps after ``start`` (rank 0 only: other ranks show nothing)."""

    def __init__(self, name: str, steps: int, start: int, *, bar: bool, main: bool = True) -> None:
        self.name, self.steps, self.start, self.main = name, steps, start, main
        self.bar = None
        if bar and main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, initial=start, desc=f"train {name}", unit="step", dynamic_ncols=True,
                            file=sys.stderr)
        self.log_every = max(1, steps // 20)  # without a bar (logs, batch jobs): a line every 5% of training

    def update(self, step: int, loss: float, frozen_ratio: float, elapsed: float) -> None:
        """Step ``step`` is done; ``elapsed``: seconds since the first step of this process began."""
        if self.bar:
            self.bar.set_postfix(loss=f"{loss:.3f}", frozen=f"{frozen_ratio:.0%}", refresh=False)
            self.bar.update(1)
        elif self.main and (step % self.log_every == 0 or step == self.steps):
            print(f"[train {self.name}] step {step}/{self.steps} loss {loss:.4f} "
                  f"frozen {frozen_ratio:.0%} {elapsed / (step - self.start):.2f} s/step", flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
