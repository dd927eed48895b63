"""lm-eval's per-document samples, and the per-item records of the samples file.

From a multiple-choice sample: its (context, choice) requests and the choice
log-likelihoods; from a generation sample: its (context, response) and the score. One
record per scored document goes to the samples file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _response(sample: Mapping[str, Any]) -> str:
    """The generated text of a generate_until sample ("" when there is none)."""
    resps = sample.get("resps") or []
    first = resps[0] if resps else ""
    return str(first[0] if isinstance(first, (list, tuple)) and first else first or "")


def is_generation(sample: Mapping[str, Any]) -> bool:
    """A generate_until sample: its one request is (context, generation arguments)."""
    pairs = _pairs(sample)
    return bool(pairs) and not isinstance(pairs[0][1], str)


def _pairs(sample: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    args = sample.get("arguments") or []
    if isinstance(args, Mapping):
        return [(a.get("arg_0", ""), a.get("arg_1", "")) for a in args.values()]
    return [(a[0], a[1]) for a in args]


def requests(sample: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(context, continuation) per choice of a multiple-choice sample, or the one (context,
    response) of a generation sample; lm-eval gives a list of tuples in memory and
    ``{"gen_args_i": {"arg_0", "arg_1"}}`` once serialised."""
    pairs = _pairs(sample)
    if pairs and not isinstance(pairs[0][1], str):
        return [(str(pairs[0][0]), _response(sample))]
    return pairs


def loglikelihoods(sample: Mapping[str, Any]) -> list[float]:
    """The log-likelihood of each choice (after lm-eval's filters when it has applied them)."""
    resps = sample.get("filtered_resps") or [r[0] for r in sample.get("resps", [])]
    return [float(r[0]) for r in resps]


def sample_records(samples: Mapping[str, list], names: Sequence[str]) -> list[dict[str, Any]]:
    """One record per scored document, task by task. Multiple choice: task, doc_id, id, label,
    target, pred, acc, acc_norm and the per-choice log-likelihoods (``pred`` is their argmax).
    Generation: task, doc_id, id, target, response, answer (the parsed answer word of a
    commonsense task) and exact_match."""
    from ..data.commonsense import parse_answer

    records = []
    for name in names:
        for s in samples.get(name, []):
            doc = s.get("doc", {})
            target = s.get("target")
            if is_generation(s):
                resp = _response(s)
                bench = doc.get("cs_benchmark")
                records.append({"task": name, "doc_id": s.get("doc_id"), "id": doc.get("id"), "target": target,
                                "response": resp, "answer": parse_answer(bench, resp) if bench else None,
                                "exact_match": s.get("exact_match")})
                continue
            ll = loglikelihoods(s)
            label = doc.get("label", target)
            records.append({
                "task": name, "doc_id": s.get("doc_id"), "id": doc.get("id"),
                "label": label, "target": target,
                "pred": max(range(len(ll)), key=ll.__getitem__) if ll else None,
                "acc": s.get("acc"), "acc_norm": s.get("acc_norm"),
                "loglikelihoods": ll})
    return records
