"""lm-eval's per-document samples of multiple-choice tasks, and the per-item records.

From each sample: its (context, choice) requests and the choice log-likelihoods; one
record per scored document goes to the samples file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def requests(sample: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(context, continuation) per choice; lm-eval gives a list of tuples in memory and
    ``{"gen_args_i": {"arg_0", "arg_1"}}`` once serialised."""
    args = sample.get("arguments") or []
    if isinstance(args, Mapping):
        return [(a.get("arg_0", ""), a.get("arg_1", "")) for a in args.values()]
    return [(a[0], a[1]) for a in args]


def loglikelihoods(sample: Mapping[str, Any]) -> list[float]:
    """The log-likelihood of each choice (after lm-eval's filters when it has applied them)."""
    resps = sample.get("filtered_resps") or [r[0] for r in sample.get("resps", [])]
    return [float(r[0]) for r in resps]


def sample_records(samples: Mapping[str, list], names: Sequence[str]) -> list[dict[str, Any]]:
    """One record per scored document, task by task: task, doc_id, id, label, target, pred,
    acc, acc_norm and the per-choice log-likelihoods (``pred`` is their argmax)."""
    records = []
    for name in names:
        for s in samples.get(name, []):
            ll = loglikelihoods(s)
            doc = s.get("doc", {})
            target = s.get("target")
            label = doc.get("label", target)
            records.append({
                "task": name, "doc_id": s.get("doc_id"), "id": doc.get("id"),
                "label": label, "target": target,
                "pred": max(range(len(ll)), key=ll.__getitem__) if ll else None,
                "acc": s.get("acc"), "acc_norm": s.get("acc_norm"),
                "loglikelihoods": ll})
    return records
