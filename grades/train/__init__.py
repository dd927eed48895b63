"""One fine-tuning run: ``python -m grades.train --config RUN.yaml --out RUN_DIR``.

The package's rooms, each with one job:

    config       the run config: load and validate, hash, seed
    inputs       model and data resolved; examples tokenized into batches; validation loss
    checkpoint   the checkpoint folder, what a checkpoint holds, resuming from one
    run          :func:`run`: one run from its config to its run directory
    record       versions, git commit and peak memory for train.json
    errors       :class:`RunFailed`
    cli          the command line (``main``)

The names other code uses are re-exported here.
"""

from .checkpoint import Checkpoints
from .cli import main
from .config import config_hash, load_run_config, resume_hash, seed_everything
from .errors import RunFailed
from .inputs import BatchStream, collate, resolve_data, resolve_model, tokenize_examples, validation_loss
from .run import run

__all__ = ["BatchStream", "Checkpoints", "RunFailed", "collate", "config_hash", "load_run_config", "main",
           "resolve_data", "resolve_model", "resume_hash", "run", "seed_everything", "tokenize_examples",
           "validation_loss"]
