"""One fine-tuning run: ``python -m grades.train --config RUN.yaml --out RUN_DIR``.

The package's rooms, each with one job:

    run          :func:`run`: one run from its config to its run directory (failure record included)
    config       the run config: load and validate, hash, seed
    inputs       model and data resolved; examples tokenized into batches; validation loss
    setup        the process (threads, device, seed) and the parts a run trains with
    precision    the dtypes of weights, optimizer state, compute and gradient sums (fp32, bf16-mixed, bf16-pure)
    parallel     the model spread over the processes: FSDP2 per transformer block, or not at all
    state        those parts (:class:`Training`) and the loop's counters (:class:`LoopState`)
    loop         the training steps: accumulation, the non-finite check, validation, checkpoints
    progress     a progress bar, or a log line every 5% of the steps
    checkpoint   the checkpoint folder, written by every rank at once; the one a run resumes from
    snapshot     what a checkpoint holds (sharded tensors through torch.distributed.checkpoint) and restoring it
    faults       fault-injection hooks for the tests (no-ops in normal use)
    record       what train.json says: setup, result, versions, git commit, peak memory
    errors       :class:`RunFailed`
    cli          the command line (``main``); ``python -m grades.train`` runs it

The names other code uses are re-exported here; the modules import from each other, not from here.
"""

from .checkpoint import Checkpoints
from .cli import main
from .config import config_hash, load_run_config, resume_hash, seed_everything
from .errors import RunFailed
from .faults import Faults, InjectedFaults, faults_from_env
from .inputs import BatchStream, collate, resolve_data, resolve_model, tokenize_examples, validation_loss
from .runner import run

__all__ = ["BatchStream", "Checkpoints", "Faults", "InjectedFaults", "RunFailed", "collate", "config_hash",
           "faults_from_env", "load_run_config", "main", "resolve_data", "resolve_model", "resume_hash", "run",
           "seed_everything", "tokenize_examples", "validation_loss"]
