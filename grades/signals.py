"""Per-component convergence signals, computed in one batched pass.

Three signals (see :data:`grades.config.SIGNALS`):

* ``grad_delta_l1``  ||G_t - G_{t-1}||_1 — paper v3, the default. Needs the gradient of
  the step before each check, kept in a buffer (optionally low precision or sampled).
* ``grad_l1``        ||G_t||_1 — paper v1. Stateless.
* ``weight_delta_l1`` ||W_t - W_{t-k}||_1 — what the released ``grades`` 1.0.6 computes
  (k = check interval). Needs a weight snapshot.

A component's signal is the sum over its parameters (weight and bias, or LoRA A and B).
Per-parameter L1 norms come from the batched kernels :func:`l1_norms` and
:func:`delta_l1_norms` (public, so :mod:`grades.bench` can time each ``kernel`` by name);
they are summed per component with one ``index_add_`` and moved to the host with a
single synchronisation per check.

A delta has no value at its first measurement, nor for a parameter with no gradient:
those entries are NaN, and NaN/Inf never counts as converged.

The sampled estimator (``sample_fraction``) reads a fixed subset of each matrix, so a
NaN or Inf elsewhere in the matrix would not reach its signal. Every check therefore
also takes one full reduction of each sampled parameter's source (its gradient, or its
weights for ``weight_delta_l1``): :func:`finite_probe`, a float32 sum on CPU and one
fused L1 norm per group of tensors elsewhere, the same data volume as one gradient
norm. A non-finite probe turns that parameter's signal into NaN (folded into the same
host synchronisation), so the matrix is not frozen at that check; the probe is also
kept with the previous-gradient buffer, so the next delta, which would subtract a
gradient with a NaN in it, is NaN too, exactly as with the full estimator.

Sharded parameters (FSDP2 ``DTensor``, :mod:`grades.shards`): each rank reads its own
shard of every gradient (or weight) and keeps its own shard of the buffers; the partial
L1 sums of all ranks are added with one all-reduce per check, folded into the check's
one host synchronisation, so every rank gets the same whole-matrix values (and so takes
the same decisions). The sampled estimator keeps, on each rank, the fixed indices that
fall in its rows: the subset, and the values, do not depend on the number of ranks.
"""

from __future__ import annotations

import math

import torch

from .components import Component
from .shards import flat_range, is_sharded, local, mesh_of, rows_of, sharded_like, sum_over_ranks

# The L1 kernels walk the gradients in cache-sized slices, so no full-size temporary is
# ever allocated and each element of G_t and of the buffer crosses memory once (read G_t,
# read and write the buffer) instead of about six times (difference, norm, copy).
#
# * "slices" (CPU): per slice of _SLICE elements, sub into a reused scratch, abs_, sum,
#   copy. torch's CPU L1 norm is not vectorised (several times slower than a sum), so the
#   reduction is an in-place abs followed by a sum.
# * "foreach" (CUDA and other devices): groups of _GROUP elements cut into _FSLICE-element
#   slices, with torch._foreach_sub / _foreach_norm / _foreach_copy_ (few kernel launches).
# kernel="auto" (the default everywhere) picks by device, see resolve_kernel; grades.bench
# times each kernel on the machine at hand by naming it.
KERNELS = ("auto", "slices", "foreach")
_SLICE = 1 << 18
_FSLICE = 1 << 15
_GROUP = 1 << 18
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _checked(kernel: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"unknown L1 kernel {kernel!r}; choose from {list(KERNELS)}")
    return kernel


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """The kernel that ``kernel`` means on ``device``: "auto" is "slices" on CPU, "foreach" elsewhere."""
    return _checked(kernel) if kernel != "auto" else ("slices" if device.type == "cpu" else "foreach")


def _owner_sum(per_slice: list[torch.Tensor], owner: list[int], n: int, device) -> torch.Tensor:
    out = torch.zeros(n, dtype=torch.float64, device=device)
    if not per_slice:
        return out
    return out.index_add_(0, torch.tensor(owner, dtype=torch.long, device=device),
                          torch.stack(per_slice).to(torch.float64))


def l1_norms(cur: list[torch.Tensor], *, kernel: str = "auto", slice_elements: int | None = None) -> torch.Tensor:
    """float64 ||cur_i||_1 per tensor, on the tensors' device.

    ``kernel``: "auto", "slices" or "foreach" (see :func:`resolve_kernel`);
    ``slice_elements``: elements per slice of the "slices" kernel (default 2^18; the
    "foreach" kernel takes one norm per tensor and does not slice)."""
    device = cur[0].device
    if resolve_kernel(kernel, device) != "slices":
        return torch.stack(torch._foreach_norm(cur, 1)).to(torch.float64)
    size = _SLICE if slice_elements is None else slice_elements
    scratch = torch.empty(min(size, max(t.numel() for t in cur)), dtype=torch.float32, device=device)
    per_slice, owner = [], []
    for i, c in enumerate(cur):
        for cs in c.reshape(-1).split(size):
            s = scratch[: cs.numel()]
            torch.abs(cs, out=s) if cs.dtype == s.dtype else s.copy_(cs).abs_()
            per_slice.append(s.sum())
            owner.append(i)
    return _owner_sum(per_slice, owner, len(cur), device)


def delta_l1_norms(cur: list[torch.Tensor], buf: list[torch.Tensor], *, update: bool, kernel: str = "auto",
                   slice_elements: int | None = None) -> torch.Tensor:
    """float64 ||cur_i - buf_i||_1 per pair, on the tensors' device; with ``update`` also ``buf_i <- cur_i``.

    ``kernel``: "auto", "slices" or "foreach" (see :func:`resolve_kernel`);
    ``slice_elements``: elements per slice (default 2^18 for "slices", 2^15 for "foreach")."""
    device = cur[0].device
    per_slice: list[torch.Tensor] = []
    owner: list[int] = []
    if resolve_kernel(kernel, device) == "slices":
        size = _SLICE if slice_elements is None else slice_elements
        scratch = torch.empty(min(size, max(t.numel() for t in cur)), dtype=torch.float32, device=device)
        for i, (c, b) in enumerate(zip(cur, buf)):
            for cs, bs in zip(c.reshape(-1).split(size), b.reshape(-1).split(size)):
                s = scratch[: cs.numel()]
                torch.sub(cs, bs, out=s)
                per_slice.append(s.abs_().sum())
                if update:
                    bs.copy_(cs)
                owner.append(i)
        return _owner_sum(per_slice, owner, len(cur), device)
    size = _FSLICE if slice_elements is None else slice_elements
    cs_all: list[torch.Tensor] = []
    bs_all: list[torch.Tensor] = []
    for i, (c, b) in enumerate(zip(cur, buf)):
        c_sl = c.reshape(-1).split(size)
        cs_all.extend(c_sl)
        bs_all.extend(b.reshape(-1).split(size))
        owner.extend([i] * len(c_sl))
    start, n = 0, len(cs_all)
    per_group = max(1, _GROUP // size)
    while start < n:
        end = min(n, start + per_group)
        diff = torch._foreach_sub(cs_all[start:end], bs_all[start:end])
        per_slice.extend(torch._foreach_norm(diff, 1))
        if update:
            torch._foreach_copy_(bs_all[start:end], cs_all[start:end])
        start = end
    return _owner_sum(per_slice, owner, len(cur), device)


def finite_probe(tensors: list[torch.Tensor], *, kernel: str = "auto") -> torch.Tensor:
    """One float32 value per tensor that is finite iff every entry of the tensor is.

    A sum propagates NaN and Inf (and +Inf + -Inf is NaN); summing in float32 keeps
    half-precision gradients from overflowing. "slices" (CPU): ``Tensor.sum`` per tensor,
    vectorised; "foreach": one fused L1 norm per group (few kernel launches)."""
    device = tensors[0].device
    if resolve_kernel(kernel, device) == "slices":
        return torch.stack([t.sum(dtype=torch.float32) for t in tensors])
    return torch.stack(torch._foreach_norm(tensors, 1, dtype=torch.float32))


class SignalTracker:
    """Computes one signal for a fixed list of components.

    ``measure(active)`` returns a CPU float64 tensor with one value per component
    (NaN where there is none). ``active`` is a bool list: inactive (frozen) components
    are skipped entirely — no norm, no buffer update — and their buffers are freed.
    ``kernel`` names the L1 kernel ("auto", the default, picks by device; see
    :func:`resolve_kernel`).
    """

    def __init__(
        self,
        components: list[Component],
        signal: str = "grad_delta_l1",
        *,
        normalize: bool = False,
        buffer_dtype: str = "float32",
        sample_fraction: float | None = None,
        seed: int = 0,
        kernel: str = "auto",
    ) -> None:
        self.components = components
        self.kernel = _checked(kernel)
        self.signal = signal
        self.normalize = normalize
        self.buffer_dtype = _DTYPES[buffer_dtype]
        self.sample_fraction = sample_fraction
        self.params: list[torch.nn.Parameter] = [p for c in components for p in c.params]
        self._owner_list = [i for i, c in enumerate(components) for _ in c.params]
        self._owner = torch.tensor(self._owner_list, dtype=torch.long)
        self._numel = torch.tensor([c.numel for c in components], dtype=torch.float64)
        # sharded parameters (FSDP2 DTensors): every rank measures its shard, and one sum
        # over ranks per check gives the whole-matrix values (grades.shards)
        self.mesh = mesh_of(self.params)
        # sampled estimator: fixed random flat indices per parameter, and the scale
        self._index: list[torch.Tensor | None] = [None] * len(self.params)
        self._scale = torch.ones(len(self.params), dtype=torch.float64)
        # sharded and sampled: which run [a, b) of the matrix's k sorted indices this rank's shard holds
        self._span: list[tuple[int, int, int] | None] = [None] * len(self.params)
        if sample_fraction is not None and signal != "grad_l1":
            # one index set per parameter size (and device), shared by the parameters of
            # that size: each matrix still gets a fixed random subset of its entries, and
            # the indices cost next to nothing (q_proj of every layer shares one set).
            # A shard keeps the indices that fall in its rows, so the subset, and the
            # signal, do not depend on how many ranks share the matrix.
            shared: dict[tuple, tuple[torch.Tensor, tuple[int, int, int]]] = {}
            for j, p in enumerate(self.params):
                n = p.numel()
                k = max(1, math.ceil(sample_fraction * n))
                if k < n:
                    lo, hi = flat_range(p)
                    key = (n, str(p.device), lo, hi)
                    if key not in shared:
                        gen = torch.Generator().manual_seed(seed * 1_000_003 + n)
                        idx = torch.randperm(n, generator=gen)[:k].sort().values
                        a, b = (int(torch.searchsorted(idx, v)) for v in (lo, hi))
                        shared[key] = ((idx[a:b] - lo).to(device=p.device, dtype=torch.int32), (a, b, k))
                    self._index[j], span = shared[key]
                    if is_sharded(p):
                        self._span[j] = span
                    self._scale[j] = n / k
        # previous gradient (grad_delta) or weight snapshot (weight_delta), per param
        self._buffer: list[torch.Tensor | None] = [None] * len(self.params)
        # sampled buffers: the finite_probe of the full source they were taken from
        self._probe: list[torch.Tensor | None] = [None] * len(self.params)

    # ------------------------------------------------------------------ state
    @property
    def needs_buffer(self) -> bool:
        return self.signal in ("grad_delta_l1", "weight_delta_l1")

    def buffer_bytes(self) -> int:
        """Bytes held by this tracker (buffers and sample indices)."""
        total = sum(b.numel() * b.element_size() for b in self._buffer if b is not None)
        unique = {id(i): i for i in self._index if i is not None}  # shared index sets count once
        total += sum(i.numel() * i.element_size() for i in unique.values())
        return total

    def clear(self) -> None:
        """Forget every previous gradient / weight snapshot (the next measurement is undefined)."""
        self._buffer = [None] * len(self.params)
        self._probe = [None] * len(self.params)

    def release(self, comp_index: int) -> None:
        """Free the buffers of a frozen component."""
        for j, owner in enumerate(self._owner_list):
            if owner == comp_index:
                self._buffer[j] = None
                self._probe[j] = None

    def _source(self, p: torch.nn.Parameter) -> torch.Tensor | None:
        """What the signal reads of ``p`` on this rank: its gradient or its weights (the local shard)."""
        if self.signal == "weight_delta_l1":
            return local(p.detach())
        return local(p.grad)

    def _view(self, j: int, t: torch.Tensor) -> torch.Tensor:
        idx = self._index[j]
        if idx is None:
            return t
        return t.reshape(-1).index_select(0, idx)

    # --------------------------------------------------------------- measure
    def _collect(self, active: list[bool] | None):
        """(param indices, current views, full sources of the sampled ones, their positions)."""
        sel: list[int] = []
        cur: list[torch.Tensor] = []
        full: list[torch.Tensor] = []
        at: list[int] = []
        for j, p in enumerate(self.params):
            if active is not None and not active[self._owner_list[j]]:
                continue
            src = self._source(p)
            if src is None:
                continue
            if self._index[j] is not None:
                at.append(len(sel))
                full.append(src)
            sel.append(j)
            cur.append(self._view(j, src))
        return sel, cur, full, at

    @torch.no_grad()
    def measure(self, active: list[bool] | None = None, *, update_buffer: bool = True) -> torch.Tensor:
        """Signal per component (CPU float64; NaN where undefined or the source is not finite)."""
        n_comp = len(self.components)
        sel, cur, full, at = self._collect(active)
        out = torch.full((n_comp,), float("nan"), dtype=torch.float64)
        if not sel:
            return out
        device = cur[0].device
        per_param = torch.full((len(sel),), float("nan"), dtype=torch.float64, device=device)
        # sampled sources: is every entry finite? (0 * probe is 0, or NaN for a NaN/Inf probe)
        probes = finite_probe(full, kernel=self.kernel) if full else None
        poison = torch.zeros(len(sel), dtype=torch.float64, device=device)
        if probes is not None:
            poison[torch.tensor(at, dtype=torch.long, device=device)] = probes.to(torch.float64) * 0
        if self.signal == "grad_l1":
            per_param.copy_(l1_norms(cur, kernel=self.kernel))
        else:
            have = [i for i, j in enumerate(sel) if self._buffer[j] is not None
                    and self._buffer[j].shape == cur[i].shape]
            prev = [(i, self._probe[sel[i]]) for i in have if self._probe[sel[i]] is not None]
            if prev:  # a delta against a stored gradient that held a NaN is NaN too
                idx = torch.tensor([i for i, _ in prev], dtype=torch.long, device=device)
                poison[idx] += torch.stack([v for _, v in prev]).to(torch.float64) * 0
            if have:
                norms = delta_l1_norms([cur[i] for i in have], [self._buffer[sel[i]] for i in have],
                                       update=update_buffer, kernel=self.kernel)
                idx = torch.tensor(have, dtype=torch.long, device=device)
                per_param[idx] = norms
            if update_buffer:
                done = set(have)
                rest = [i for i in range(len(sel)) if i not in done]  # first measurement: allocate
                self._store([sel[i] for i in rest], [cur[i] for i in rest])
                for k, i in enumerate(at):
                    self._probe[sel[i]] = probes[k]
        per_param = per_param + poison
        if self.mesh is not None:  # each rank measured its shard: the one collective of a check
            sel, per_param = self._sum_over_ranks(sel, per_param)
            if not sel:
                return out
        sel_t = torch.tensor(sel, dtype=torch.long)
        per_param = per_param.cpu() * self._scale[sel_t]  # the one host sync of a check
        owner = self._owner[sel_t]
        sums = torch.zeros(n_comp, dtype=torch.float64).index_add_(0, owner, per_param)
        counted = torch.zeros(n_comp, dtype=torch.float64).index_add_(0, owner, torch.ones_like(per_param))
        out = torch.where(counted > 0, sums, out)  # NaN propagates through sums
        if self.normalize:
            out = out / self._numel
        return out

    def _sum_over_ranks(self, sel: list[int], per_param: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Whole-matrix values from the ranks' partial ones, in one all-reduce.

        Values and a count of the ranks that measured each parameter travel together; a
        parameter measured by some ranks and not by others has no whole value (dropped)."""
        n = len(self.params)
        both = torch.zeros(2 * n, dtype=torch.float64, device=per_param.device)
        at = torch.tensor(sel, dtype=torch.long, device=per_param.device)
        both[at] = per_param
        both[n + at] = 1.0
        both = sum_over_ranks(both, self.mesh).cpu()  # the one host sync of a check
        keep = (both[n:] == self.mesh.size()).nonzero().flatten()
        return keep.tolist(), both[keep]

    @torch.no_grad()
    def record(self, active: list[bool] | None = None) -> None:
        """Store the current gradients / weights as the previous values, no signal."""
        if not self.needs_buffer:
            return
        sel, cur, full, at = self._collect(active)
        self._store(sel, cur)
        if full:  # kept on the device; the next measure folds it into its one synchronisation
            probes = finite_probe(full, kernel=self.kernel)
            for k, i in enumerate(at):
                self._probe[sel[i]] = probes[k]

    def _store(self, sel: list[int], cur: list[torch.Tensor]) -> None:
        for j, t in zip(sel, cur):
            buf = self._buffer[j]
            if buf is None or buf.shape != t.shape:
                self._buffer[j] = t.to(self.buffer_dtype, copy=True)
            else:
                buf.copy_(t)

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Buffers and probes, to save with a checkpoint.

        Without sharding: CPU tensors and floats. With sharded parameters every rank must
        call it (it takes collectives): a full buffer is a DTensor laid out like its
        parameter (saved shard by shard, loadable on another number of ranks), a sampled
        one the whole matrix's k values (small), and a probe is 0 or NaN for the whole matrix."""
        if self.mesh is None:
            return {"buffer": [None if b is None else b.cpu() for b in self._buffer],
                    "probe": [None if v is None else float(v) for v in self._probe]}
        bufs: list = [None if b is None or self._span[j] is not None else sharded_like(b, self.params[j])
                      for j, b in enumerate(self._buffer)]
        sampled = [j for j, b in enumerate(self._buffer) if b is not None and self._span[j] is not None]
        if sampled:  # each rank fills its run of the k values, the sum over ranks has them all
            sizes = [self._span[j][2] for j in sampled]
            flat = torch.zeros(sum(sizes), dtype=torch.float32, device=self._buffer[sampled[0]].device)
            off = 0
            for j, k in zip(sampled, sizes):
                a, b, _ = self._span[j]
                flat[off + a: off + b] = self._buffer[j].float()
                off += k
            flat = sum_over_ranks(flat, self.mesh).cpu()
            for j, part in zip(sampled, flat.split(sizes)):
                bufs[j] = part.to(self.buffer_dtype)
        have = [j for j, v in enumerate(self._probe) if v is not None]
        probes: list = [None] * len(self.params)
        if have:  # 0 where every shard was finite, NaN where one was not
            zero = torch.stack([self._probe[j].to(torch.float64) * 0 for j in have])
            for j, v in zip(have, sum_over_ranks(zero, self.mesh).tolist()):
                probes[j] = v
        return {"buffer": bufs, "probe": probes}

    def load_state_dict(self, state: dict) -> None:
        """Buffers and probes from :meth:`state_dict`, of this run or of one on another number of ranks.

        A buffer may come as a DTensor laid out like its parameter here (its local shard is
        kept) or as the whole tensor (this rank keeps its rows, or its run of a sampled one's k values)."""
        bufs = state["buffer"]
        if len(bufs) != len(self.params):
            raise ValueError(f"signal state has {len(bufs)} buffers, tracker has {len(self.params)} parameters")
        self._buffer = [None if b is None else self._local_buffer(j, b).to(p.device)
                        for j, (b, p) in enumerate(zip(bufs, self.params))]
        probes = state.get("probe") or [None] * len(self.params)
        self._probe = [None if v is None else torch.tensor(v, dtype=torch.float32, device=p.device)
                       for v, p in zip(probes, self.params)]

    def _local_buffer(self, j: int, b: torch.Tensor) -> torch.Tensor:
        """This rank's part of a saved buffer ``b`` of parameter ``j``."""
        p = self.params[j]
        if is_sharded(b) or not is_sharded(p):
            return local(b)
        if self._span[j] is not None:
            lo, hi, _ = self._span[j]
            return b[lo:hi]
        return rows_of(b, p)
