"""The FLOPs vocabulary: passes and kinds, a step's :class:`FlopsBreakdown`, and the
per-frozen-set cost coefficients of a :class:`FlopsPlan` (the walk that fills them:
:mod:`grades.flops.walk`)."""

from __future__ import annotations

from dataclasses import dataclass, field

FORWARD = "forward"
INPUT_GRAD = "input_grad"
WEIGHT_GRAD = "weight_grad"
PASSES = (FORWARD, INPUT_GRAD, WEIGHT_GRAD)

ATTN = "attn"  # attention projections (q/k/v/o, qkv), including their LoRA adapters
MLP = "mlp"  # MLP projections (gate/up/down, gate_up), including their LoRA adapters
SCORES = "attention_scores"  # Q K^T and P V
LM_HEAD = "lm_head"
KINDS = (ATTN, MLP, SCORES, LM_HEAD)
# vision tower of a VLM, per image (present only for models whose vision tower is counted)
VISION_ATTN, VISION_MLP, VISION_SCORES = "vision_attn", "vision_mlp", "vision_attention_scores"
VISION_EMBED, PROJECTOR = "vision_patch_embed", "projector"
VISION_KINDS = (VISION_ATTN, VISION_MLP, VISION_SCORES, VISION_EMBED, PROJECTOR)
TO_VISION = {ATTN: VISION_ATTN, MLP: VISION_MLP, SCORES: VISION_SCORES}

Key = tuple[str, str]  # (kind, pass)


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class FlopsBreakdown:
    """Matmul FLOPs of one step (or of an accumulation of steps).

    Two decompositions of the same ``total``: by pass (``forward + input_grad +
    weight_grad``) and by kind (``by_kind``: ``attn``, ``mlp``, ``attention_scores``,
    ``lm_head``).  ``attention`` and ``lm_head`` repeat ``by_kind["attention_scores"]``
    and ``by_kind["lm_head"]`` (all passes); ``attention`` is the score/value matmuls,
    not the q/k/v/o projections (those are ``by_kind["attn"]``).  ``by_kind_pass``
    holds the full ``kind -> pass -> FLOPs`` table.
    """

    forward: float
    input_grad: float
    weight_grad: float
    attention: float
    lm_head: float
    total: float
    by_kind: dict[str, float]
    by_kind_pass: dict[str, dict[str, float]] = field(repr=False)
    vision: float = 0.0  # the vision kinds (tower, patch embedding, projector) summed; 0 for language models

    @classmethod
    def from_terms(cls, terms: dict[Key, float]) -> FlopsBreakdown:
        kinds = KINDS + tuple(k for k in VISION_KINDS if any(key[0] == k for key in terms))
        table = {k: {p: float(terms.get((k, p), 0.0)) for p in PASSES} for k in kinds}
        by_kind = {k: sum(v.values()) for k, v in table.items()}
        by_pass = {p: sum(table[k][p] for k in kinds) for p in PASSES}
        return cls(forward=by_pass[FORWARD], input_grad=by_pass[INPUT_GRAD], weight_grad=by_pass[WEIGHT_GRAD],
                   attention=by_kind[SCORES], lm_head=by_kind[LM_HEAD], total=sum(by_pass.values()),
                   by_kind=by_kind, by_kind_pass=table,
                   vision=sum(v for k, v in by_kind.items() if k in VISION_KINDS))

    def to_dict(self) -> dict:
        """JSON-friendly copy."""
        out = {"total": self.total, "forward": self.forward, "input_grad": self.input_grad,
               "weight_grad": self.weight_grad, "attention": self.attention, "lm_head": self.lm_head,
               "by_kind": dict(self.by_kind), "by_kind_pass": {k: dict(v) for k, v in self.by_kind_pass.items()}}
        if any(k in VISION_KINDS for k in self.by_kind):
            out["vision"] = self.vision
        return out


@dataclass(frozen=True)
class FlopsPlan:
    """Per-step cost coefficients for one frozen set.

    A step over ``batch_size`` sequences of ``seq_len`` positions with ``images``
    pictures costs, per ``(kind, pass)``, ``per_position * batch_size * seq_len +
    per_sequence_sq * batch_size * seq_len**2 + per_image * images + per_call`` FLOPs
    (``per_call``: work done once per forward+backward, e.g. forming the LoRA-adapted
    weights of an expert stack).
    """

    per_position: dict[Key, float]
    per_sequence_sq: dict[Key, float]
    per_image: dict[Key, float] = field(default_factory=dict)  # vision tower + projector (VLMs)
    vision_counted: bool = False  # the model's vision tower is walked (Idefics3-style VLMs)
    per_call: dict[Key, float] = field(default_factory=dict)  # once per forward+backward

    def terms(self, batch_size: int, seq_len: int, images: int = 0) -> dict[Key, float]:
        n, sq = batch_size * seq_len, batch_size * seq_len * seq_len
        keys = self.per_position.keys() | self.per_sequence_sq.keys()
        out = {k: self.per_position.get(k, 0.0) * n + self.per_sequence_sq.get(k, 0.0) * sq for k in keys}
        if images:
            for k, v in self.per_image.items():
                out[k] = out.get(k, 0.0) + v * images
        for k, v in self.per_call.items():
            out[k] = out.get(k, 0.0) + v
        return out

    def evaluate(self, batch_size: int, seq_len: int, images: int = 0) -> FlopsBreakdown:
        return FlopsBreakdown.from_terms(self.terms(batch_size, seq_len, images))
