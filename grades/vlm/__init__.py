"""Vision-language models: a tiny local VLM, training batches, multiple-choice scoring.

Everything grades.train and the evaluation need to fine-tune and score a VLM
(Idefics3: a SigLIP-style vision encoder, a pixel-shuffle connector, a Llama text model;
why this family, and what the tiny one learns: :mod:`grades.vlm.build`). The package, by
concern:

* :mod:`.build` — the tiny VLM built in code (:func:`prepare_tiny_vlm`,
  :func:`build_tiny_vlm`), optionally caption-aligned (:func:`align_pretrain`); the
  ``tiny-vlm:`` model source.
* :mod:`.compose` — :func:`compose_vlm`: a pretrained SigLIP encoder and a Llama-architecture
  language model joined by a fresh connector; the ``compose-vlm:idefics3`` model source.
* :mod:`.checkpoint` — :func:`load_vlm` ``(model, processor)``, parameters per part
  (:func:`grades.models.is_vlm_dir` detects a VLM directory).
* :mod:`.encode` — prompts (``<image>Q: {question}\\nA:`` or the chat template), rows ->
  training items (:func:`encode_examples`, :class:`LazyItems`), batches
  (:class:`VLMBatchStream`, :func:`vlm_batches`).
* :mod:`.train` — :func:`train_inputs` for :func:`grades.train.run`;
  :func:`expand_lora_targets` (``@language`` / ``@vision``).
* :mod:`.score` — :func:`score_multiple_choice` (log-likelihood of each choice given image
  + prompt) and :func:`summarize_scores`.
* :mod:`.lmeval` — generation tasks (``shapes_gen``, the benchmarks of ``evals/tasks/hub``)
  through lm-eval's ``hf-multimodal`` or ``vllm-vlm`` (:func:`run_lm_eval`,
  :func:`lm_eval_kwargs`, :func:`merge_adapter`).
* :mod:`.evaluate` — :func:`evaluate_vlm`: any mix of those tasks -> one eval.json.
* :mod:`.cli` — ``python -m grades.vlm prepare|evaluate``.
"""

from __future__ import annotations

from .build import (FAMILIES, SPECIAL_TOKENS, TINY_SOURCE, TINY_VLM_DEFAULTS, align_pretrain, build_into,
                    build_tiny_vlm, check_family, check_options, data_dir, describe, image_seq_len,
                    prepare_tiny_vlm, train_steps)
from .checkpoint import count_params, load_vlm, param_groups
from .cli import build_parser, evaluate_kwargs, main
from .compose import COMPOSE_DEFAULTS, COMPOSE_SOURCE, check_composed, check_compose_options, compose_into, compose_vlm
from .encode import (IMAGE_KEYS_SKIP, SEQ_KEYS, LazyItems, VLMBatchStream, collate_vlm, encode_example,
                     encode_examples, encode_prompt, format_prompt, format_target, image_token, open_image, pad_cat,
                     pad_id, vlm_batches)
from .errors import VLMError
from .evaluate import evaluate_vlm
from .lmeval import (generate_with_lm_eval, hub_tasks, lm_eval_kwargs, lm_eval_tasks, merge_adapter, run_lm_eval,
                     split_vlm_tasks, task_entry)
from .score import mean_stderr, request_lengths, score_multiple_choice, summarize_scores
from .train import expand_lora_targets, train_inputs

__all__ = [
    "COMPOSE_DEFAULTS", "COMPOSE_SOURCE", "FAMILIES", "IMAGE_KEYS_SKIP", "SEQ_KEYS", "SPECIAL_TOKENS", "TINY_SOURCE",
    "TINY_VLM_DEFAULTS", "LazyItems", "VLMBatchStream", "VLMError", "align_pretrain", "build_into", "build_parser",
    "build_tiny_vlm", "check_composed", "check_compose_options", "check_family", "check_options", "collate_vlm",
    "compose_into", "compose_vlm", "count_params", "data_dir", "describe", "encode_example", "encode_examples",
    "encode_prompt", "evaluate_kwargs", "evaluate_vlm", "expand_lora_targets", "format_prompt", "format_target",
    "generate_with_lm_eval", "hub_tasks", "image_seq_len", "image_token", "lm_eval_kwargs", "lm_eval_tasks",
    "load_vlm", "main", "mean_stderr", "merge_adapter", "open_image", "pad_cat", "pad_id", "param_groups",
    "prepare_tiny_vlm", "request_lengths", "run_lm_eval", "score_multiple_choice", "split_vlm_tasks",
    "summarize_scores", "task_entry", "train_inputs", "train_steps", "vlm_batches",
]
