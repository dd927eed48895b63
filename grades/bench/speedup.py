"""1b realised vs predicted speedup as matrices freeze, and the optimizer memory given back."""

from __future__ import annotations

import torch

from ..components import discover_components
from .timing import Plan, interleave, log, mad_rel, med, paired_ratio, raw, train_step
from .workload import ModelSpec, add_lora, random_batch


class Configurator:
    """Puts one model into a (frozen fraction, variant) configuration, reversibly."""

    def __init__(self, model, mode: str, optimizer, params: list) -> None:
        self.model, self.mode, self.opt, self.params = model, mode, optimizer, params
        self.comps = discover_components(model)
        self.order = sorted(range(len(self.comps)), key=lambda i: (self.comps[i].layer, i))  # lowest layers first
        self.groups = [list(g["params"]) for g in optimizer.param_groups]
        self.savings = None

    def apply(self, fraction: int, variant: str) -> dict:
        from ..savings import Savings, SavingsConfig, prune_param_groups, unmerge_adapters

        # undo the previous configuration
        if self.savings is not None and self.savings.truncation is not None:
            self.savings.truncation.remove()
        for c in self.comps:
            if c.lora:
                unmerge_adapters(c.module)
        for p in self.params:
            p.requires_grad_(True)
            p.grad = None
        for g, ps in zip(self.opt.param_groups, self.groups):
            g["params"] = list(ps)
        # freeze the lowest `fraction` % of the components
        n = round(len(self.comps) * fraction / 100)
        frozen = [False] * len(self.comps)
        for i in self.order[:n]:
            frozen[i] = True
            for p in self.comps[i].params:
                p.requires_grad_(False)
        info = {"frozen_components": n, "truncated_layers": 0, "merged_modules": 0, "pruned_params": 0}
        self.savings = None
        if variant == "savings":
            cfg = SavingsConfig(truncate_backward=True, merge_lora_on_freeze=self.mode == "lora")
            self.savings = Savings(self.model, self.comps, cfg)
            with torch.no_grad():
                self.savings.sync(frozen)
            info["truncated_layers"] = self.savings.truncation.k
            info["merged_modules"] = self.savings.merged_modules
            info["pruned_params"] = prune_param_groups(self.opt)
        return info


def bench_speedup(spec: ModelSpec, plan: Plan, modes: tuple[str, ...]) -> dict:
    from ..flops import step_flops

    out = {"model": spec.name, "batch_size": plan.batch_size, "seq_len": plan.seq_len, "modes": {},
           "freeze_order": "lowest layers first (all matrices of layer 0, then layer 1, ...)"}
    for mode in modes:
        model = spec.build()
        if mode == "fp-frozen-emb":
            model.get_input_embeddings().weight.requires_grad_(False)  # tied: the lm_head too
        if mode == "lora":
            model = add_lora(model, plan.lora_r, plan.lora_alpha)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-7, foreach=True)
        conf = Configurator(model, mode, opt, params)
        batch = random_batch(spec.vocab(model), plan.batch_size, plan.seq_len)
        configs = [(0, "plain")] + [(f, v) for f in plan.fractions if f > 0 for v in ("plain", "savings")]
        keys = [f"{f}%/{v}" for f, v in configs]
        flops, infos = {}, {}
        for (f, v), k in zip(configs, keys):
            infos[k] = conf.apply(f, v)
            flops[k] = step_flops(model, plan.batch_size, plan.seq_len)
        current = [None]

        def run_one(k: str, n: int) -> list[dict]:
            if current[0] != k:
                f, v = k.split("/")
                conf.apply(int(f[:-1]), v)
                current[0] = k
            return [train_step(model, batch, opt, params) for _ in range(n)]

        log(f"speedup {spec.name} {mode}: {len(configs)} configurations x {plan.rounds} rounds")
        times = interleave(keys, plan, run_one, progress=f"speedup {spec.name} {mode}", warmup_all=plan.warmup_all)
        conf.apply(0, "plain")
        base_f = flops[keys[0]].total
        rows = []
        for (f, v), k in zip(configs, keys):
            ts = times[k]
            step = med([t["step"] for t in ts])
            fb = med([t["fwd_bwd"] for t in ts])
            pred = base_f / flops[k].total
            real = 1.0 / paired_ratio(ts, times[keys[0]])  # base / this, paired within rounds
            rows.append({
                "frozen_pct": f, "variant": v, **infos[k], "steps_timed": len(ts),
                "step_s": step, "fwd_bwd_s": fb, "optimizer_s": med([t["optimizer"] for t in ts]),
                "step_noise_mad_rel": mad_rel([t["step"] for t in ts]),
                "flops": flops[k].total, "flops_by_pass": {"forward": flops[k].forward,
                                                           "input_grad": flops[k].input_grad,
                                                           "weight_grad": flops[k].weight_grad},
                "predicted_speedup": pred, "realised_speedup": real, "efficiency": real / pred,
                "realised_speedup_fwd_bwd": 1.0 / paired_ratio(ts, times[keys[0]], "fwd_bwd"),
                "efficiency_fwd_bwd": 1.0 / paired_ratio(ts, times[keys[0]], "fwd_bwd") / pred,
                "steps_ms": raw(ts),
            })
        mem = optimizer_release(model, params, plan, batch) if mode == "fp" else None
        out["modes"][mode] = {"params": sum(p.numel() for p in model.parameters()), "trainable_params":
                              sum(p.numel() for p in params), "components": len(conf.comps), "rows": rows,
                              "optimizer_memory": mem}
        del model, opt, conf
    return out


def optimizer_state_bytes(optimizer) -> int:
    from ..freezer import base_optimizer

    opt = base_optimizer(optimizer)
    return sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if torch.is_tensor(v))


def optimizer_release(model, params: list, plan: Plan, batch: dict) -> dict:
    """Optimizer state bytes, measured on the optimizer, as matrices freeze (through the Freezer)."""
    from ..freezer import Freezer

    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-7, foreach=True)
    train_step(model, batch, opt, params)
    comps = discover_components(model)
    order = sorted(range(len(comps)), key=lambda i: (comps[i].layer, i))
    fr = Freezer(comps, opt)
    rows = [{"frozen_pct": 0, "optimizer_state_bytes": optimizer_state_bytes(opt), "released_counted": 0}]
    for f in [x for x in plan.fractions if x > 0]:
        for i in order[: round(len(comps) * f / 100)]:
            fr.freeze(i, step=1)
        rows.append({"frozen_pct": f, "optimizer_state_bytes": optimizer_state_bytes(opt),
                     "released_counted": fr.released_optimizer_bytes})
    full = rows[0]["optimizer_state_bytes"]
    for r in rows:
        r["released_bytes"] = full - r["optimizer_state_bytes"]
        r["released_fraction"] = r["released_bytes"] / full if full else None
    for p in params:
        p.requires_grad_(True)
    return {"optimizer": "AdamW (2 fp32 moments per trainable parameter)", "rows": rows}
