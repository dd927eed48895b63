"""Helpers of the lm-eval tasks over the Hub copies of the paper's multimodal benchmarks.

The YAMLs beside this file (``gqa``, ``vqav2``, ``coco_caption``, ``mmstar_*``) name these
functions with ``!function vlm_bench.<name>``; lm-eval imports this file by its path.
All tasks are ``generate_until`` with one image per question, for lm-eval's
``hf-multimodal`` and ``vllm-vlm`` backends.

Prompts put lm-eval's ``<image>`` placeholder first, then the text.  Without
``apply_chat_template`` hf-multimodal replaces the placeholder by the model's image token
(``config.image_token_id``, decoded) and its processor expands that token; vllm-vlm keeps
the literal ``<image>``, which only suits models whose image placeholder is that string.
With ``apply_chat_template`` both backends split the prompt on the placeholder into
``[{"type": "image"}, {"type": "text", "text": question...}]`` and the processor's chat
template places the image tokens.  So the chat template is the portable choice, above all with vllm-vlm.

Responses: generation stops at the end-of-sequence token (the YAMLs' ``until`` is empty)
or ``max_gen_toks``; the short-answer and caption metrics read the response's first non-empty
line (:func:`first_line`), so a model that starts with a newline is not scored as empty
(with ``until: ["\\n"]`` it would be).

Metrics
-------
* ``gqa`` -- ``exact_match``: :func:`normalize_answer` (lower case, punctuation dropped,
  articles a/an/the dropped, whitespace collapsed) of the answer equals that of ``answer``.
* ``vqav2`` -- ``vqa_acc``: the VQA accuracy (:func:`vqa_accuracy`): for each of the
  leave-one-annotator-out subsets of the (10) human answers, ``min(1, #matches / 3)``,
  averaged; answers and prediction normalised as the official VQA evaluation does
  (:func:`normalize_vqa`).
* ``coco_caption`` -- ``cider``: corpus CIDEr-D (:func:`cider_d`) over the evaluated images,
  computed by the aggregation :func:`cider_aggregate` from the ``(caption, references)``
  pairs that :func:`coco_process_results` returns.  lm-eval 0.4.13 bootstraps stderrs only
  for its own aggregation functions, so this metric's stderr is ``"N/A"``.
* ``mmstar_*`` -- ``acc``: the option letter found in the response (:func:`extract_choice`)
  equals ``answer``.

GQA images: the question rows (config ``testdev_balanced_instructions``) hold an
``imageId``; the pictures are in config ``testdev_balanced_images`` (rows ``id``, ``image``)
of the same dataset, read lazily on the first :func:`gqa_doc_to_image` call with
``datasets.load_dataset`` (from the HF cache when offline) and kept decoded per id (the
12,578 testdev-balanced questions share 398 pictures).  ``$GRADES_GQA_IMAGES`` overrides the source:
a local ``.parquet`` or ``.arrow`` file, a ``Dataset.save_to_disk`` directory (rows ``id`` and
``image`` in each case), or another Hub dataset id (read with the same config and split).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

IMAGE = "<image>"  # lm-eval's image placeholder (hf_vlms / vllm_vlms DEFAULT_IMAGE_PLACEHOLDER)
SHORT_ANSWER = "Answer the question using a single word or phrase."
CAPTION = "Provide a one-sentence caption for the provided image."
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."

GQA_IMAGES_ENV = "GRADES_GQA_IMAGES"
GQA_IMAGES = {"path": "lmms-lab/GQA", "name": "testdev_balanced_images", "split": "testdev"}


# ------------------------------------------------------------------ common
def rgb(image):
    """The PIL image in RGB (the same object when it already is)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def doc_to_image(doc: dict) -> list:
    """The row's ``image`` as a one-element list of RGB PIL images (VQAv2, COCO, MMStar)."""
    return [rgb(doc["image"])]


_NEWLINE = re.compile(r"\r\n|\r|\n")


def first_line(text: str) -> str:
    """The first non-empty line of a response (lines end at \\n, \\r\\n or \\r), stripped;
    "" when there is none."""
    return next((s.strip() for s in _NEWLINE.split(str(text)) if s.strip()), "")


# --------------------------------------------------------------------- GQA
_gqa_sources: dict[str, tuple[Any, dict[str, int], dict[str, Any]]] = {}


def gqa_images_source() -> str:
    """Where the GQA pictures come from: ``$GRADES_GQA_IMAGES`` or the Hub dataset."""
    return os.environ.get(GQA_IMAGES_ENV) or GQA_IMAGES["path"]


def _load_gqa_images(source: str):
    import datasets

    p = Path(source).expanduser()
    if p.is_dir():
        return datasets.load_from_disk(str(p))
    if p.is_file() and p.suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(p), split="train")
    if p.is_file() and p.suffix == ".arrow":
        return datasets.Dataset.from_file(str(p))
    return datasets.load_dataset(source, GQA_IMAGES["name"], split=GQA_IMAGES["split"])


def _gqa_images(source: str):
    if source not in _gqa_sources:
        ds = _load_gqa_images(source)
        missing = {"id", "image"} - set(ds.column_names)
        if missing:
            raise ValueError(f"GQA images from {source!r}: no column(s) {sorted(missing)} "
                             f"(has {ds.column_names})")
        _gqa_sources[source] = (ds, {str(i): k for k, i in enumerate(ds["id"])}, {})
    return _gqa_sources[source]


def gqa_image(image_id: str):
    """The RGB picture with this GQA id (decoded once per id)."""
    source = gqa_images_source()
    ds, rows, decoded = _gqa_images(source)
    key = str(image_id)
    if key not in decoded:
        if key not in rows:
            raise KeyError(f"GQA image {key!r} is not among the {len(rows)} pictures of {source!r}")
        decoded[key] = rgb(ds[rows[key]]["image"])
    return decoded[key]


def gqa_doc_to_image(doc: dict) -> list:
    return [gqa_image(doc["imageId"])]


def short_answer_prompt(doc: dict) -> str:
    return f"{IMAGE}{doc['question'].strip()}\n{SHORT_ANSWER}"


gqa_doc_to_text = short_answer_prompt
vqav2_doc_to_text = short_answer_prompt

_PUNCT = re.compile(r"[^\w\s]|_")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles (a, an, the) removed, whitespace collapsed."""
    t = _PUNCT.sub("", str(text).lower())
    return " ".join(_ARTICLES.sub(" ", t).split())


def gqa_process_results(doc: dict, results: list[str]) -> dict:
    pred = first_line(results[0])
    return {"exact_match": float(normalize_answer(pred) == normalize_answer(doc["answer"]))}


# ------------------------------------------------------------------- VQAv2
# The official VQA answer normalisation, in its order: newlines/tabs -> spaces; punctuation
# (each mark dropped where it touches a space or the text has a digit,digit comma, else made a
# space); periods not followed by a digit dropped; then per lower-cased word: number words ->
# digits, articles dropped, apostrophe-less contractions -> their apostrophe form.
_VQA_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
              "?", "!"]
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"\.(?!\d)")  # a period not followed by a digit ("5." -> "5"; "2.5" stays)
_NUMBERS = {w: str(i) for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                             "nine", "ten"])}
_NUMBERS["none"] = "0"
_VQA_ARTICLES = {"a", "an", "the"}
# contractions with their apostrophes; the map below sends every spelling that drops
# some of them (e.g. "dont", "couldntve", "couldn'tve") to this form
_CONTRACTIONS = [
    "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't", "don't", "hadn't",
    "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd", "how'll", "how's", "i'd've", "isn't",
    "it'd", "it'd've", "it'll", "let's", "ma'am", "mightn't", "mightn't've", "might've", "mustn't", "must've",
    "needn't", "not've", "o'clock", "oughtn't", "'ow's'at", "shan't", "she'd've", "she's", "should've",
    "shouldn't", "shouldn't've", "somebody'd", "somebody'd've", "somebody'll", "somebody's", "someone'd",
    "someone'd've", "someone'll", "someone's", "something'd", "something'd've", "something'll", "that's",
    "there'd", "there'd've", "there're", "there's", "they'd", "they'd've", "they'll", "they're", "they've",
    "'twas", "wasn't", "we'd've", "we've", "weren't", "what'll", "what're", "what's", "what've", "when's",
    "where'd", "where's", "where've", "who'd", "who'd've", "who'll", "who's", "who've", "why'll", "why're",
    "why's", "won't", "would've", "wouldn't", "wouldn't've", "y'all", "y'all'll", "y'all'd've", "you'd",
    "you'd've", "you'll", "you're", "you've",
]
_NOT_CONTRACTIONS = {"shed"}  # an English word that is also an apostrophe-less spelling


def _spellings(word: str) -> set[str]:
    parts = word.split("'")
    out = {parts[0]}
    for part in parts[1:]:
        out = {s + sep + part for s in out for sep in ("", "'")}
    return out


_CONTRACTION_MAP = {s: c for c in _CONTRACTIONS for s in _spellings(c) if s != c and s not in _NOT_CONTRACTIONS}


def normalize_vqa(text: str) -> str:
    """An answer normalised as the official VQA evaluation does (see the comment above)."""
    src = str(text).replace("\n", " ").replace("\t", " ").strip()
    digit_comma = _DIGIT_COMMA.search(src) is not None
    t = src
    for p in _VQA_PUNCT:  # the test looks at the text before any replacement, as the official one does
        t = t.replace(p, "" if (digit_comma or p + " " in src or " " + p in src) else " ")
    t = _PERIOD.sub("", t)
    words = [_NUMBERS.get(w, w) for w in t.lower().split()]
    return " ".join(_CONTRACTION_MAP.get(w, w) for w in words if w not in _VQA_ARTICLES)


def vqa_accuracy(prediction: str, answers: list) -> float:
    """VQA accuracy of one prediction against the human answers (strings or ``{"answer": ...}``).

    For each annotator, ``min(1, #other annotators giving the prediction / 3)``; the mean over
    annotators. With 10 answers: 0 matches -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.
    Unlike the official script, which normalises only when the annotators disagree, the prediction
    and answers are always normalised (the annotations themselves are already normalised)."""
    gts = [normalize_vqa(a["answer"] if isinstance(a, dict) else a) for a in answers]
    if not gts:
        return 0.0
    p = normalize_vqa(prediction)
    hits = sum(g == p for g in gts)
    return sum(min(1.0, (hits - (g == p)) / 3) for g in gts) / len(gts)


#: questions of the VQAv2 validation split that are scored: a fixed sample (seeded shuffle)
VQAV2_SAMPLE, VQAV2_SEED = 10_000, 0


def vqav2_docs(dataset):
    """A fixed sample of :data:`VQAV2_SAMPLE` questions (all of them when the split is smaller):
    lm-eval builds every request with its decoded picture up front, and the 214,354 questions
    of the split do not fit in memory."""
    if len(dataset) <= VQAV2_SAMPLE:
        return dataset
    return dataset.shuffle(seed=VQAV2_SEED).select(range(VQAV2_SAMPLE)).flatten_indices()


def vqav2_process_results(doc: dict, results: list[str]) -> dict:
    return {"vqa_acc": vqa_accuracy(first_line(results[0]), doc["answers"])}


# -------------------------------------------------------------------- COCO
def coco_doc_to_text(doc: dict) -> str:
    return f"{IMAGE}{CAPTION}"


def caption_tokens(text: str) -> list[str]:
    """Tokens of a caption for CIDEr: lower case, every character that is not a letter, digit
    or whitespace replaced by a space, split on whitespace ("A man's bike." -> a man s bike).
    The COCO evaluation uses the Stanford PTB tokenizer (Java) instead, which keeps
    contractions apart ("man 's") and removes punctuation tokens; scores differ slightly."""
    return _PUNCT.sub(" ", str(text).lower()).split()


def _ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def cider_d_scores(candidates: list[list[str]], references: list[list[list[str]]], n: int = 4,
                   sigma: float = 6.0) -> list[float]:
    """CIDEr-D of each tokenised candidate against its tokenised references.

    As in the COCO caption evaluation: n-gram (1..n) counts weighted by TF-IDF, the document
    frequency of an n-gram being the number of images whose references contain it (over the
    images given here), idf = log(#images) - log(max(1, df)); per n, the clipped similarity
    sum_g min(c_g, r_g) * r_g / (|c| |r|) times the length penalty exp(-(len_c - len_r)^2 /
    (2 sigma^2)); averaged over n, over the references, and multiplied by 10."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    if not candidates:
        return []
    cands = [_ngram_counts(c, n) for c in candidates]
    refs = [[_ngram_counts(r, n) for r in rs] for rs in references]
    df: Counter = Counter()
    for rs in refs:
        df.update(set().union(*rs) if rs else set())
    log_images = math.log(len(refs))

    def tfidf(counts: Counter) -> tuple[list[dict], list[float]]:
        vec: list[dict] = [{} for _ in range(n)]
        for g, tf in counts.items():
            vec[len(g) - 1][g] = tf * (log_images - math.log(max(1.0, df[g])))
        return vec, [math.sqrt(sum(w * w for w in v.values())) for v in vec]

    scores = []
    for cand, c_tokens, ref_counts, ref_tokens in zip(cands, candidates, refs, references):
        if not ref_counts:
            raise ValueError("an image without reference captions")
        vc, nc = tfidf(cand)
        total = 0.0
        for r, r_tokens in zip(ref_counts, ref_tokens):
            vr, nr = tfidf(r)
            penalty = math.exp(-((len(c_tokens) - len(r_tokens)) ** 2) / (2 * sigma ** 2))
            sims = 0.0
            for k in range(n):
                dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vc[k].items())
                if nc[k] and nr[k]:
                    dot /= nc[k] * nr[k]
                sims += dot * penalty
            total += sims / n
        scores.append(10.0 * total / len(ref_counts))
    return scores


def cider_d(pairs: list[tuple[str, list[str]]], n: int = 4, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D (mean over images) of ``(caption, reference captions)`` pairs, tokenised
    with :func:`caption_tokens`; 0.0 for no pairs."""
    pairs = list(pairs)
    if not pairs:
        return 0.0
    scores = cider_d_scores([caption_tokens(c) for c, _ in pairs],
                            [[caption_tokens(r) for r in refs] for _, refs in pairs], n=n, sigma=sigma)
    return sum(scores) / len(scores)


def coco_process_results(doc: dict, results: list[str]) -> dict:
    return {"cider": (first_line(results[0]), list(doc["answer"]))}


def cider_aggregate(items: list) -> float:
    """lm-eval aggregation of ``cider``: corpus CIDEr-D of the evaluated images."""
    return cider_d([(c, list(refs)) for c, refs in items])


# ------------------------------------------------------------------ MMStar
MMSTAR_CATEGORIES = {
    "coarse_perception": "coarse perception",
    "fine_grained_perception": "fine-grained perception",
    "instance_reasoning": "instance reasoning",
    "logical_reasoning": "logical reasoning",
    "math": "math",
    "science_technology": "science & technology",
}


def mmstar_doc_to_text(doc: dict) -> str:
    return f"{IMAGE}{doc['question'].strip()}\n{MULTIPLE_CHOICE}"


def _category_docs(category: str):
    def process_docs(dataset):
        docs = dataset.filter(lambda c: c == category, input_columns="category")
        if len(docs) == 0:
            found = sorted(set(dataset["category"]))
            raise ValueError(f"MMStar: no question of category {category!r} (categories: {found})")
        return docs

    process_docs.__name__ = process_docs.__qualname__ = f"mmstar_{category}_docs"
    return process_docs


mmstar_coarse_perception_docs = _category_docs(MMSTAR_CATEGORIES["coarse_perception"])
mmstar_fine_grained_perception_docs = _category_docs(MMSTAR_CATEGORIES["fine_grained_perception"])
mmstar_instance_reasoning_docs = _category_docs(MMSTAR_CATEGORIES["instance_reasoning"])
mmstar_logical_reasoning_docs = _category_docs(MMSTAR_CATEGORIES["logical_reasoning"])
mmstar_math_docs = _category_docs(MMSTAR_CATEGORIES["math"])
mmstar_science_technology_docs = _category_docs(MMSTAR_CATEGORIES["science_technology"])

_WHOLE_LETTER = re.compile(r"[(\[]?\s*([A-Da-d])\s*[)\].:]?")
_ANSWER_LETTER = re.compile(r"(?i:answer|option|choice)(?:\s+is)?\s*[:：]?\s*[(\[]?\s*([A-D])(?![A-Za-z0-9'])")
_PAREN_LETTER = re.compile(r"\(([A-D])\)")
_LONE_LETTER = re.compile(r"(?<![A-Za-z0-9'])([A-D])(?![A-Za-z0-9'])")


def extract_choice(text: str) -> str | None:
    """The option letter (A-D) of a response, or None.

    In order: the whole response is a letter, either case, maybe wrapped ("b", "(B)", "B.",
    "[C]"); a letter after "answer" / "option" / "choice" ("Answer: C", "the answer is (B)");
    a letter in parentheses ("... (D) ..."); the first capital A-D standing alone ("B. a cat",
    "I think C") -- which also takes the article in "A cat", as a first-character rule would."""
    s = str(text).strip()
    m = _WHOLE_LETTER.fullmatch(s)
    if m:
        return m.group(1).upper()
    for pattern in (_ANSWER_LETTER, _PAREN_LETTER, _LONE_LETTER):
        m = pattern.search(s)
        if m:
            return m.group(1)
    return None


def mmstar_process_results(doc: dict, results: list[str]) -> dict:
    return {"acc": float(extract_choice(results[0]) == str(doc["answer"]).strip().upper())}
