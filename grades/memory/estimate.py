"""Per-GPU memory of one training run, before it runs: parameters, gradients, optimizer, GradES state, activations.

From a run config (``grades/schemas/run.schema.yaml``), the model's shapes
(:class:`grades.memory.arch.Arch`) and the number of GPUs, in bytes per GPU:

* **parameters**: trainable ones in the master dtype, the rest (a LoRA base) as loaded,
  divided by the GPUs when sharded (``parallel: fsdp``); plus, sharded, what FSDP2 holds
  whole at a time: two blocks (the current one and the next, prefetched) and the root
  module (embeddings, head) in the compute dtype;
* **gradients**: of the trainable parameters, in the reduce dtype, sharded like them,
  plus one block's whole gradients before the reduce-scatter;
* **optimizer**: AdamW's two moments per trainable parameter, in the master dtype
  (sharded); SGD without momentum holds none;
* **grades_state**: the previous gradient (``grad_delta_l1``) or weight snapshot
  (``weight_delta_l1``) of every tracked matrix, in ``buffer_dtype``, times
  ``sample_fraction`` when sampled, sharded like the parameters;
* **activations**: what the forward pass keeps for the backward pass, per token of the
  per-GPU micro-batch, per block (calibrated on Hugging Face's Llama / Qwen3 blocks with
  SDPA attention, :data:`PER_LAYER`), or only each block's input with gradient
  checkpointing plus one block recomputed; vision towers likewise per picture patch;
* **transient**: the largest short-lived buffer on top of the rest: the logits' gradients
  at the loss (float32 and the compute dtype); on a CPU (``device="cpu"``), where
  ``grades.train`` runs AdamW's multi-tensor step, its one parameter-sized temporary if
  larger (activations are freed by then) -- on a GPU AdamW is fused and has none;
* **overhead**: 1.5 GiB (CUDA context, kernels) plus 10% of the rest for the allocator's
  fragmentation -- an assumption, not a measurement.

How close this comes to a measured peak on CPU (tiny model, SmolLM2-135M):
``python -m grades.memory measure`` and docs/guides/cluster.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .arch import Arch, Dims

GIB = 1 << 30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
OVERHEAD_FIXED = int(1.5 * GIB)
OVERHEAD_SHARE = 0.10
PARTS = ("parameters", "gradients", "optimizer", "grades_state", "activations", "transient", "overhead")


@dataclass
class Estimate:
    """Bytes per GPU of one run, by part (:data:`PARTS`), and what they assume."""

    name: str
    gpus: int
    strategy: str
    precision: str
    parts: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def record(self) -> dict:
        return {"name": self.name, "gpus": self.gpus, "strategy": self.strategy, "precision": self.precision,
                "bytes": dict(self.parts), "total_bytes": self.total, "notes": list(self.notes)}


def per_layer_bytes(d: Dims, e: int) -> float:
    """Bytes a block keeps for backward per token, computing in ``e``-byte floats.

    Measured with saved-tensor hooks on Llama and Qwen3 blocks (CPU, SDPA): the norms'
    inputs and outputs (4 x hidden), the rotated query, the keys and values repeated to
    the query heads and the attention output (4 x q_dim), keys and values before that
    (2 x kv_dim), the MLP's gate, up, activation and product (4 x intermediate); a bfloat16
    block adds float32 copies in its norms (4 bytes x hidden), Qwen3's q/k norms
    (e + 4 bytes) x (q_dim + kv_dim)."""
    b = e * (4 * d.hidden + 4 * d.q_dim + 2 * d.kv_dim + 4 * d.intermediate)
    if e == 2:
        b += 4 * d.hidden
    if d.qk_norm:
        b += (e + 4) * (d.q_dim + d.kv_dim)
    return b


def activation_bytes(arch: Arch, tokens: int, images: int, e: int, checkpointing: bool) -> tuple[int, int]:
    """(kept for backward, transient at the loss) for ``tokens`` tokens and ``images`` pictures on one GPU."""
    out = 0.0
    stacks = [(arch.text, tokens)] + ([(arch.vision, images * arch.patches)] if arch.vision and images else [])
    for d, n in stacks:
        layer = per_layer_bytes(d, e) * n
        out += (d.layers * e * d.hidden * n + layer) if checkpointing else d.layers * layer
    h = arch.text.hidden
    out += tokens * (4 * arch.vocab + (13 if e == 4 else 8.5) * h)  # embeddings, final norm, fp32 log-softmax
    transient = tokens * (4 + e) * arch.vocab  # logits' gradient in fp32 and in the compute dtype
    return int(out), int(transient)


def estimate(arch: Arch, cfg: dict, gpus: int, *, strategy: str | None = None, precision: str | None = None,
             name: str | None = None, device: str = "cuda") -> Estimate:
    """Bytes per GPU of the run ``cfg`` on ``gpus`` GPUs (one process each).

    ``strategy`` / ``precision``: the run's (``fsdp`` with several GPUs or bf16-mixed, else
    ``none``; ``fp32`` for a float32 model, else ``bf16-mixed``), unless given."""
    if precision is None:
        precision = cfg.get("precision") or ("fp32" if cfg["model"]["dtype"] == "float32" else "bf16-mixed")
    if strategy is None:
        strategy = cfg.get("parallel") or ("fsdp" if gpus > 1 or precision == "bf16-mixed" else "none")
    sharded = strategy == "fsdp"
    w = gpus if sharded else 1
    loaded = BYTES[cfg["model"]["dtype"]]
    master = 2 if precision == "bf16-pure" else 4
    compute = 4 if precision == "fp32" else 2
    reduce = 2 if precision == "bf16-pure" else 4
    frozen_bytes = {"fp32": 4, "bf16-pure": 2}.get(precision, loaded)
    notes = []

    if cfg["mode"] == "lora":
        trainable, tracked = arch.lora_params(cfg["lora"]["r"], cfg["lora"]["targets"])
    else:
        trainable, tracked = arch.params, arch.tracked
    frozen = arch.params - trainable
    share = trainable / max(1, arch.params)

    parts = dict.fromkeys(PARTS, 0)
    parts["parameters"] = (trainable * master + frozen * frozen_bytes) / w
    parts["gradients"] = trainable * reduce / w
    if sharded:  # whole at a time: two blocks and the root in the compute dtype; one block's gradients
        parts["parameters"] += (2 * arch.block_params + arch.root_params) * compute
        parts["gradients"] += arch.block_params * share * (compute + reduce)
    parts["optimizer"] = 2 * trainable * master / w if cfg["optim"]["name"] == "adamw" else 0
    parts["grades_state"] = grades_state(cfg["method"], tracked) / w

    rows = cfg["batch_size"] // w if cfg["batch_size"] % w == 0 else 1
    images = rows if arch.vision is not None else 0
    kept, transient = activation_bytes(arch, rows * cfg["seq_len"], images, compute,
                                       bool(cfg.get("gradient_checkpointing")))
    # AdamW's multi-tensor step on a CPU: the square root of every exp_avg_sq at once
    adam_temp = trainable * master / w if cfg["optim"]["name"] == "adamw" and device == "cpu" else 0
    parts["activations"], parts["transient"] = kept, max(transient, adam_temp - kept)
    parts = {k: int(v) for k, v in parts.items()}
    parts["overhead"] = int(OVERHEAD_FIXED + OVERHEAD_SHARE * sum(parts.values()))
    if not arch.exact:
        notes.append(f"shapes {arch.origin}: approximate")
    if arch.vision is not None:
        notes.append(f"{arch.patches} vision patches per example assumed")
    method = cfg["method"] if isinstance(cfg["method"], dict) else {"name": cfg["method"]}
    if method.get("name") == "es" and method.get("restore_best"):
        notes.append(f"es restore_best keeps a copy of the trainable weights in host memory "
                     f"({trainable * master / w / GIB:.1f} GiB per process)")
    return Estimate(name=name or cfg.get("name", "run"), gpus=gpus, strategy=strategy, precision=precision,
                    parts=parts, notes=notes)


def grades_state(method, tracked: int) -> float:
    """Bytes of GradES's buffers over ``tracked`` parameters (0 for other methods and ``grad_l1``)."""
    if not isinstance(method, dict) or not method.get("name", "").startswith("grades"):
        return 0.0
    name = method["name"]
    signal = method.get("signal") or {"grades-v1": "grad_l1", "grades-weight": "weight_delta_l1",
                                      "grades-official": "weight_delta_l1"}.get(name, "grad_delta_l1")
    if signal == "grad_l1":
        return 0.0
    if name == "grades-official":  # the released code keeps float32 copies of every tracked weight
        return 4.0 * tracked
    return BYTES[method.get("buffer_dtype", "float32")] * tracked * (method.get("sample_fraction") or 1.0)
