"""Account for every weight matrix inside a model's transformer blocks: what GradES tracks and what it leaves out.

GradES stops a run once every *tracked* matrix is frozen. A weight matrix that sits in
a block but that :func:`grades.components.discover_components` does not recognise
(an expert stack stored under an unknown name, a Mamba mixer in a hybrid stack, a
projection with an unfamiliar attribute name) would keep training with no signal and
would be cut off by that stop. :func:`coverage` measures this; GradES refuses to start
(:class:`UntrackedWeightsError`, naming the matrices) unless the configuration allows it
(``GradESConfig.allow_untracked``).

What counts as a **weight matrix**: a *trainable* parameter (``requires_grad`` at the
start) of a transformer block with two or more dimensions that is not a bias (its name
is not ``bias`` and does not end in ``_bias``): projection weights, 3-D expert stacks,
router weights, LoRA A/B factors. Norm weights (1-D) and biases are not weight
matrices; they keep training until the run stops. Under LoRA the frozen base weights
are not trainable and so not counted; the adapters are.

Blocks are the elements of the model's block lists (:func:`grades.components.block_lists`)
plus any other ``nn.ModuleList`` whose elements hold trainable weight matrices (a
tower GradES does not recognise at all counts as untracked, not as absent). Vision
blocks the model never reads (LLaVA's layers after ``vision_feature_layer``) get no
gradient; they are reported as ``unused_params`` and left out of the share.
Parameters outside the blocks (embeddings, lm_head, final norm, the projector between
towers) are reported as ``outside_params`` and are not part of the share either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .components import SKIP_OWNERS, Component, block_lists

LIST_LIMIT = 20  # names shown in an error message


class UntrackedWeightsError(ValueError):
    """Weight matrices inside the blocks are not tracked, and the config does not allow it."""


def is_weight_matrix(name: str, param: nn.Parameter) -> bool:
    """Two or more dimensions and not a bias (see the module docstring)."""
    last = name.rsplit(".", 1)[-1]
    return param.ndim >= 2 and last != "bias" and not last.endswith("_bias")


@dataclass
class Coverage:
    """Share of the blocks' trainable weight-matrix parameters that components track."""

    tracked_params: int
    block_params: int
    untracked: dict[str, int] = field(default_factory=dict)  # parameter name -> numel
    unused_params: int = 0
    outside_params: int = 0

    @property
    def share(self) -> float:
        """Tracked / all trainable block weight-matrix parameters (1.0 when there are none)."""
        return self.tracked_params / self.block_params if self.block_params else 1.0

    @property
    def complete(self) -> bool:
        return not self.untracked

    def record(self) -> dict:
        """JSON-friendly form (goes into the controller's summary, i.e. train.json["grades"])."""
        return {"share": self.share, "tracked_params": self.tracked_params, "block_params": self.block_params,
                "untracked_params": sum(self.untracked.values()), "untracked": sorted(self.untracked),
                "unused_params": self.unused_params, "outside_params": self.outside_params}

    def describe(self, limit: int = LIST_LIMIT) -> str:
        names = sorted(self.untracked)
        shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
        n_un = sum(self.untracked.values())
        return (f"{len(names)} weight matrices inside the blocks are not tracked ({n_un:,} of "
                f"{self.block_params:,} trainable block-matrix parameters; GradES tracks {self.share:.1%}): {shown}")


def coverage(model: nn.Module, components: list[Component]) -> Coverage:
    """Measure which of ``model``'s trainable block weight matrices ``components`` hold."""
    names: dict[int, str] = {}
    for n, p in model.named_parameters():
        names.setdefault(id(p), n)
    tracked = {id(p) for c in components for p in c.params}
    in_blocks: set[int] = set()
    unused: set[int] = set()
    for _, blocks, _, used in block_lists(model):
        for i, block in enumerate(blocks):
            ids = {id(p) for p in block.parameters()}
            (in_blocks if i < used else unused).update(ids)
    in_blocks |= _unrecognised_blocks(model, in_blocks | unused)
    unused -= in_blocks
    cov = Coverage(0, 0)
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        name = names.get(id(p), "?")
        if id(p) in unused:
            cov.unused_params += p.numel()
        elif id(p) not in in_blocks:
            cov.outside_params += p.numel()
        elif is_weight_matrix(name, p):
            cov.block_params += p.numel()
            if id(p) in tracked:
                cov.tracked_params += p.numel()
            else:
                cov.untracked[name] = p.numel()
    return cov


def _unrecognised_blocks(model: nn.Module, known: set[int]) -> set[int]:
    """Parameters of module lists GradES did not recognise as blocks but whose elements
    hold trainable weight matrices (outside the projectors it skips on purpose)."""
    out: set[int] = set()
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or not len(mod):
            continue
        if any(p in SKIP_OWNERS for p in path.split(".")):
            continue
        params = [(n, p) for n, p in mod.named_parameters() if id(p) not in known]
        if any(p.requires_grad and is_weight_matrix(n, p) for n, p in params):
            out |= {id(p) for _, p in params}
    return out


def check_coverage(cov: Coverage, allow_untracked: bool, who: str = "GradES") -> None:
    """Raise :class:`UntrackedWeightsError` naming the untracked matrices, unless allowed."""
    if cov.complete or allow_untracked:
        return
    raise UntrackedWeightsError(
        f"{who} refuses to start: {cov.describe()}. It would stop training once the tracked matrices are "
        f"frozen while these never had a signal. Freeze them before training, teach grades.components their "
        f"names, or set allow_untracked: true in the GradES config (GradESConfig(allow_untracked=True), or the "
        f"run config's method block) to run anyway; the coverage report in the summary "
        f"(train.json['grades']['coverage']) then lists them.")


__all__ = ["Coverage", "UntrackedWeightsError", "check_coverage", "coverage", "is_weight_matrix"]
