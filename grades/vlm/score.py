"""Multiple-choice scoring of a VLM: log-likelihood of each choice, and the task's statistics.

lm-eval's ``multiple_choice`` rule, with the picture: the continuation is ``" " + choice``
after image + prompt, no eos; acc = argmax, acc_norm = argmax of ll / len(choice).
lm-eval 0.4.13's ``hf-multimodal`` backend cannot do this: its ``loglikelihood`` raises
``NotImplementedError`` for requests that carry images (only ``generate_until`` is
implemented). :func:`summarize_scores` makes the task's eval.json entry;
:func:`request_lengths` counts each request's tokens.
"""

from __future__ import annotations

import math
import sys

import torch

from .encode import collate_vlm, encode_prompt, pad_id


@torch.no_grad()
def score_multiple_choice(model, processor, examples: list[dict], batch_size: int = 16,
                          progress: bool = False) -> list[dict]:
    """Per example: log-likelihood of ``" " + choice`` after image + prompt, for every choice.

    Returns ``[{"id", "label", "loglikelihoods", "pred", "acc", "pred_norm", "acc_norm", "type"}]``."""
    tok = processor.tokenizer
    pid = pad_id(processor)
    was = model.training
    model.eval()
    rows: list[tuple[int, int, list[int], int, dict]] = []  # (example, choice, ids, n_prompt, extras)
    for i, ex in enumerate(examples):
        p, extras = encode_prompt(processor, ex)
        for j, ch in enumerate(ex["choices"]):
            c = tok(" " + ch, add_special_tokens=False)["input_ids"]
            rows.append((i, j, p + c, len(p), extras))
    lls = [[0.0] * len(ex["choices"]) for ex in examples]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc="score", file=sys.stderr)
    for s in range(0, len(rows), batch_size):
        chunk = rows[s: s + batch_size]
        items = [{"input_ids": ids, "labels": ids, "extras": ex} for _, _, ids, _, ex in chunk]
        b = collate_vlm(items, pid)
        b.pop("labels")
        logp = torch.log_softmax(model(**b).logits.float(), dim=-1)
        for r, (i, j, ids, n_p, _) in enumerate(chunk):
            tgt = torch.tensor(ids[n_p:])
            pos = torch.arange(n_p - 1, len(ids) - 1)
            lls[i][j] = float(logp[r, pos, tgt].sum())
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    model.train(was)
    out = []
    for ex, ll in zip(examples, lls):
        pred = max(range(len(ll)), key=ll.__getitem__)
        norm = [v / max(1, len(c)) for v, c in zip(ll, ex["choices"])]
        pred_n = max(range(len(norm)), key=norm.__getitem__)
        out.append({"id": ex.get("id"), "type": ex.get("type"), "label": ex["label"], "loglikelihoods": ll,
                    "pred": pred, "acc": float(pred == ex["label"]), "pred_norm": pred_n,
                    "acc_norm": float(pred_n == ex["label"])})
    return out


def mean_stderr(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and lm-eval's stderr of a mean (sample std, ddof=1, over sqrt(n)); None when undefined."""
    n = len(values)
    if n == 0:
        return None, None
    m = sum(values) / n
    if n < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def summarize_scores(scores: list[dict], n_total: int | None = None, data: str | None = None) -> dict:
    """A task entry of eval.json (the fields of :func:`grades.evaluate.summary.task_summary`)."""
    acc, se = mean_stderr([s["acc"] for s in scores])
    accn, sen = mean_stderr([s["acc_norm"] for s in scores])
    kinds = [len(s["loglikelihoods"]) for s in scores]
    chance = sum(1 / k for k in kinds) / len(kinds) if kinds else None
    rng = [min(kinds), max(kinds)] if kinds else None
    by_type: dict[str, dict] = {}
    for t in sorted({s["type"] for s in scores if s.get("type")}):
        a, e = mean_stderr([s["acc"] for s in scores if s.get("type") == t])
        by_type[t] = {"acc": a, "acc_stderr": e, "n": sum(1 for s in scores if s.get("type") == t)}
    return {"acc": acc, "acc_stderr": se, "acc_norm": accn, "acc_norm_stderr": sen, "n": len(scores),
            "n_total": n_total if n_total is not None else len(scores), "version": 1.0, "num_fewshot": 0,
            "n_choices": (kinds[0] if rng and rng[0] == rng[1] else (1 / chance if chance else None)),
            "n_choices_range": rng, "chance_acc": chance, "data": data, "by_type": by_type}


def request_lengths(processor, examples: list[dict]) -> list[int]:
    """Tokens of every request of :func:`score_multiple_choice`: prompt (with image tokens) + choice,
    one per choice, as grades.evaluate counts a text task's tokens."""
    tok = processor.tokenizer
    lengths = []
    for ex in examples:
        n_prompt = len(encode_prompt(processor, ex)[0])
        lengths += [n_prompt + len(tok(" " + c, add_special_tokens=False)["input_ids"]) for c in ex["choices"]]
    return lengths
