"""The run directory: its layout, its files, and the only code that reads or writes them.

Layout under a profile's runs root (``results/runs/<profile>``)::

    <model>/<setting-slug>/seed<k>/   one fine-tuning run (:class:`RunDir`)
        run.yaml             the run config (written by the workflow)
        train.json           the run's record; present only when training succeeded
        train_failed.json    ... or why it failed (status, error, stage)
        signals.csv          step, component, layer, kind, type, tower, value
        freeze_events.csv    step, component, layer, kind, type, tower, params, signal, tau, reason
        grades_summary.json  the controller's summary
        model/ | adapter/    final weights
        eval.json            scores (grades.evaluate / grades.vlm evaluate)
        samples.jsonl        one record per scored test item (task, doc_id / id, acc or the task's metric)
    <model>/base/eval.json   the model without fine-tuning (and its samples.jsonl)

        .lock                while a process writes the directory (grades.lock)

Tables, figures, golden values, calibration and benchmarks read runs through
:func:`finished_runs` / :func:`load_run` / :class:`Run`; training and evaluation write
through :class:`RunDir`. Readers never raise on a damaged file: they log it and treat the
run as unfinished, so one bad run never hides the others. A writer first calls
:meth:`RunDir.open_for_writing`: the directory is checked (a directory, writable), locked
for this process (:mod:`grades.lock`: a second writer is refused, naming the first) and
cleared of what killed writes left (:func:`grades.io.clean_leftovers`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .config import ConfigError
from .io import atomic_write_json, atomic_write_text, clean_leftovers
from .lock import DirLock, DirLocked, describe
from .yamlfile import read_yaml

RUN_CONFIG = "run.yaml"
TRAIN = "train.json"
TRAIN_FAILED = "train_failed.json"
EVAL = "eval.json"
SAMPLES = "samples.jsonl"  # per-item scores, beside eval.json (grades.evaluate / grades.vlm --samples-out)
SIGNALS = "signals.csv"
EVENTS = "freeze_events.csv"
SUMMARY = "grades_summary.json"
MODEL = "model"
ADAPTER = "adapter"
BASE = "base"  # the setting slug of the model without fine-tuning

SIGNAL_COLUMNS = ["step", "component", "layer", "kind", "type", "tower", "value"]
EVENT_COLUMNS = ["step", "component", "layer", "kind", "type", "tower", "params", "signal", "tau", "reason"]
#: what a training attempt writes: removed when the next attempt starts (run.yaml and eval.json are not its own)
TRAINING_OUTPUTS = (TRAIN, TRAIN_FAILED, MODEL, ADAPTER, SIGNALS, EVENTS, SUMMARY)
GRADES_DEFAULTS = {"alpha": 0.3, "signal": "grad_delta_l1", "normalize": False}


class RunDirError(ConfigError):
    """The run directory cannot be written: a file, not writable, or held by another process."""


def check_writable(d: Path, what: str = "run directory") -> None:
    """Create ``d`` if needed and write a file into it, or raise :class:`RunDirError` saying why."""
    if d.exists() and not d.is_dir():
        raise RunDirError(f"{what} {d} is a file, not a directory; remove it or choose another directory")
    parent = next((p for p in d.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise RunDirError(f"{what} {d}: {parent} is a file, not a directory; choose another directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=d)
        try:
            os.write(fd, b"probe")
            os.close(fd)
        finally:
            Path(probe).unlink()
    except OSError as e:
        raise RunDirError(f"{what} {d} is not writable ({e.strerror or e}); nothing was trained: fix its "
                          f"permissions or choose another directory") from None


def log(msg: str) -> None:
    print(f"runs: {msg}", file=sys.stderr)


def run_path(root: str | Path, model: str, slug: str, seed: int) -> Path:
    return Path(root) / model / slug / f"seed{seed}"


def base_path(root: str | Path, model: str) -> Path:
    return Path(root) / model / BASE


def read_json(path: Path, quiet: bool = False) -> dict | None:
    """A JSON object, or None when the file is missing or damaged (logged unless ``quiet``)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError
        if not quiet:
            log(f"{path} is unreadable ({type(e).__name__}: {e}); ignoring it")
        return None
    if not isinstance(doc, dict):
        if not quiet:
            log(f"{path} does not hold a JSON object; ignoring it")
        return None
    return doc


def read_jsonl(path: Path, quiet: bool = False) -> list[dict] | None:
    """The JSON objects of a JSON-lines file, or None when it is missing or damaged (logged
    unless ``quiet``); blank lines are skipped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        if not quiet:
            log(f"{path} is unreadable ({type(e).__name__}: {e}); ignoring it")
        return None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            if not quiet:
                log(f"{path}:{i} is not JSON ({e}); ignoring the file")
            return None
        if not isinstance(rec, dict):
            if not quiet:
                log(f"{path}:{i} is not a JSON object; ignoring the file")
            return None
        out.append(rec)
    return out


def read_table(path: str | Path):
    """A CSV exactly as written: every column, pandas' own types, no checks (an empty file gives
    an empty frame). For readers that check the columns themselves: calibration takes a signals
    table from anywhere. Raises FileNotFoundError when the file is missing."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def read_csv(path: Path, columns: list[str]):
    """A signals / freeze-events CSV as a DataFrame with ``columns`` (empty when missing or damaged).

    ``step`` and (when asked for) ``layer`` are integers, rows without them are dropped;
    ``value``, ``signal``, ``tau`` and ``params`` are floats."""
    import pandas as pd

    empty = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    if not path.exists():
        return empty
    try:  # categories keep long signal files (steps x matrices rows) small in memory
        df = pd.read_csv(path, dtype={"component": "category", "kind": "category", "type": "category",
                                      "tower": "category", "reason": "category"})
    except pd.errors.EmptyDataError:
        return empty
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        log(f"cannot read {path}: {e}; treating it as empty")
        return empty
    missing = [c for c in columns if c not in df.columns]
    if missing:
        log(f"{path} lacks columns {missing}; treating it as empty")
        return empty
    if df.empty:
        return empty
    keys = [c for c in ("step", "layer") if c in columns]
    for c in keys:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("value", "signal", "tau", "params"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df = df.dropna(subset=keys)
    for c in keys:
        df[c] = df[c].astype(int)
    return df.reset_index(drop=True)


class RunDir:
    """One run directory: typed access to its files, for writers and readers alike."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock: DirLock | None = None  # held between open_for_writing() and release()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------ identity
    @property
    def is_base(self) -> bool:
        return self.path.name == BASE

    @property
    def model(self) -> str:
        return self.path.parent.name if self.is_base else self.path.parent.parent.name

    @property
    def slug(self) -> str:
        return BASE if self.is_base else self.path.parent.name

    @property
    def seed(self) -> int | None:
        name = self.path.name
        if name.startswith("seed") and name[4:].isdigit():
            return int(name[4:])
        return None

    def key(self, root: str | Path) -> str:
        """``model/slug/seed<k>`` (or ``model/base``) relative to the runs root."""
        return "/".join(self.path.relative_to(root).parts)

    # ------------------------------------------------------------ readers
    def train(self, quiet: bool = False) -> dict | None:
        return read_json(self.path / TRAIN, quiet)

    def failed(self) -> dict | None:
        return read_json(self.path / TRAIN_FAILED, quiet=True)

    def eval(self, quiet: bool = False) -> dict | None:
        return read_json(self.path / EVAL, quiet)

    def samples(self, quiet: bool = False) -> list[dict] | None:
        """The per-item records of the evaluation (samples.jsonl beside eval.json), or None."""
        return read_jsonl(self.path / SAMPLES, quiet)

    def run_config(self) -> dict:
        p = self.path / RUN_CONFIG
        if not p.exists():
            return {}
        try:
            return read_yaml(p, "run config")
        except ConfigError as e:
            log(f"{p} is unreadable ({e}); using train.json only")
            return {}

    def signals(self):
        return read_csv(self.path / SIGNALS, SIGNAL_COLUMNS)

    def events(self):
        return read_csv(self.path / EVENTS, EVENT_COLUMNS)

    def freeze_steps(self) -> dict[str, int]:
        """component -> step at which it froze, in the file's order (needs only those two columns)."""
        ev = read_csv(self.path / EVENTS, ["step", "component"])
        return {str(c): int(s) for c, s in zip(ev["component"], ev["step"])}

    # ------------------------------------------------------------ writers
    def open_for_writing(self, also_writable: tuple[str | Path, ...] = ()) -> DirLock:
        """Check, lock and clean the directory before a writer starts; returns the held lock.

        Refuses (:class:`RunDirError`) a path that is a file, a directory that cannot be written
        (also each of ``also_writable``, e.g. the checkpoint folder), and a directory another
        live process holds, naming it. A lock left by a dead process is taken over; the
        temporary files of writes that were killed (``.NAME.XXXXXXXX.tmp``) are removed."""
        check_writable(self.path)
        for d in also_writable:
            check_writable(Path(d), "checkpoint directory")
        lock = DirLock(self.path)
        try:
            lock.acquire()
        except DirLocked as e:
            raise RunDirError(f"run directory {self.path} is in use by {describe(e.holder)}; two runs must not "
                              f"write one directory: wait for it to end, or choose another directory") from None
        except OSError as e:
            raise RunDirError(f"run directory {self.path}: cannot take its lock ({e.strerror or e})") from None
        if lock.took_over:
            log(f"{self.path}: took over the lock left by {describe(lock.took_over)}, which is no longer running")
        for p in clean_leftovers(self.path):
            log(f"{self.path}: removed {p.name}, left by a write that was killed")
        self.lock = lock
        return lock

    def release(self) -> None:
        """Let go of the lock taken by :meth:`open_for_writing` (nothing when none is held)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def clear_training_outputs(self) -> None:
        """Remove what an earlier training attempt left, so the directory describes this one only."""
        for name in TRAINING_OUTPUTS:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def write_train(self, record: dict) -> Path:
        """train.json: written last, its presence means the run succeeded."""
        return atomic_write_json(self.path / TRAIN, record)

    def write_failed(self, record: dict) -> Path:
        return atomic_write_json(self.path / TRAIN_FAILED, record)

    def write_eval(self, doc: dict, path: str | Path | None = None) -> Path:
        return atomic_write_json(Path(path) if path is not None else self.path / EVAL, doc)

    def write_samples(self, records: list[dict], path: str | Path | None = None) -> Path:
        """The per-item records of an evaluation as JSON lines (one per scored document)."""
        text = "".join(json.dumps(r) + "\n" for r in records)
        return atomic_write_text(Path(path) if path is not None else self.path / SAMPLES, text)


def method_name(m: Any) -> str:
    """``"grades"`` from a run config's ``method`` (a name or a mapping)."""
    if isinstance(m, dict):
        return str(m.get("name", "none"))
    return str(m) if m is not None else "none"


@dataclass
class Run:
    """A finished run (train.json with status ok) and its files, read lazily."""

    dir: Path
    model: str
    setting: str
    mode: str
    method: str
    seed: int
    train: dict
    run_config: dict = field(default_factory=dict)
    _signals: Any = field(default=None, repr=False)
    _events: Any = field(default=None, repr=False)
    _eval: Any = field(default=False, repr=False)

    @property
    def files(self) -> RunDir:
        return RunDir(self.dir)

    @property
    def label(self) -> str:
        return f"{self.model} / {self.setting}"

    @property
    def eval(self) -> dict | None:
        if self._eval is False:
            self._eval = self.files.eval()
        return self._eval

    @property
    def steps_planned(self) -> int:
        return int(self.train.get("steps_planned") or self.run_config.get("steps") or 0)

    @property
    def steps_run(self) -> int:
        return int(self.train.get("steps_run") or self.steps_planned)

    @property
    def signals(self):
        if self._signals is None:
            self._signals = self.files.signals()
        return self._signals

    @property
    def events(self):
        if self._events is None:
            self._events = self.files.events()
        return self._events

    @property
    def has_signals(self) -> bool:
        return bool(self.signals["value"].notna().any()) if len(self.signals) else False

    # ------------------------------------------------------- GradES parameters
    @property
    def method_params(self) -> dict:
        """GradES parameters: run.yaml's method block, else train.json's summary/config, over the defaults."""
        m = self.run_config.get("method")
        if isinstance(m, dict) and method_name(m) == "grades":
            params = {k: v for k, v in m.items() if k != "name"}
        else:
            params = dict((self.train.get("grades") or {}).get("config") or {})
            if not params:
                tm = (self.train.get("config") or {}).get("method")
                params = {k: v for k, v in tm.items() if k != "name"} if isinstance(tm, dict) else {}
        return {**GRADES_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}

    def tau_for(self, tower: str) -> float:
        p = self.method_params
        v = p.get("vision_tau" if tower == "vision" else "language_tau", p.get("tau"))
        return float(v) if v is not None else math.nan

    @property
    def alpha(self) -> float:
        return float(self.method_params.get("alpha", GRADES_DEFAULTS["alpha"]))

    @property
    def grace_step(self) -> int:
        """First optimizer step at which a freeze may happen (ceil(alpha * planned steps))."""
        g = (self.train.get("grades") or {}).get("grace_steps")
        if g is not None:
            return int(g)
        return max(1, math.ceil(self.alpha * self.steps_planned))

    @property
    def n_components(self) -> int | None:
        n = (self.train.get("grades") or {}).get("components")
        if n:
            return int(n)
        if len(self.signals):
            return int(self.signals["component"].nunique())
        return None


def load_run(run_dir: str | Path, quiet: bool = False) -> Run | None:
    """The finished run in ``<model>/<setting>/seed<k>``, or None (logged) if it did not finish ok."""
    rd = RunDir(run_dir)
    t = rd.train()
    if t is None:
        if not quiet and not (rd / TRAIN).exists():
            log(f"skipping {rd.path}: no train.json (failed or unfinished run)")
        return None
    if t.get("status") != "ok":
        log(f"skipping {rd.path}: status {t.get('status')!r}")
        return None
    cfg = rd.run_config()
    if not cfg and isinstance(t.get("config"), dict):
        cfg = t["config"]
    seed = rd.seed if rd.seed is not None else int(t.get("seed", 0))
    return Run(dir=rd.path, model=rd.model, setting=str(t.get("name", rd.slug)),
               mode=str(t.get("mode", cfg.get("mode", ""))), method=method_name(t.get("method", cfg.get("method"))),
               seed=seed, train=t, run_config=cfg)


def run_dirs(root: str | Path) -> Iterator[RunDir]:
    """Every ``<model>/<slug>/seed<k>`` directory under the runs root, sorted."""
    for d in sorted(Path(root).glob("*/*/seed*")):
        if d.is_dir() and RunDir(d).seed is not None:
            yield RunDir(d)


def base_dirs(root: str | Path) -> Iterator[RunDir]:
    """Every ``<model>/base`` directory with an eval.json, sorted."""
    for e in sorted(Path(root).glob(f"*/{BASE}/{EVAL}")):
        yield RunDir(e.parent)


def finished_runs(root: str | Path, quiet: bool = True) -> list[Run]:
    """Every finished run under the runs root, sorted by directory (all seeds)."""
    out = []
    for rd in run_dirs(root):
        r = load_run(rd.path, quiet=quiet)
        if r is not None:
            out.append(r)
    return out


def setting_rank(r: Run) -> int:
    return {"fp": 0, "lora": 1}.get(r.mode, 2)


def lowest_seeds(runs: list[Run]) -> list[Run]:
    """The lowest seed of each model x setting, sorted by model, full fine-tuning before LoRA, setting."""
    best: dict[tuple[str, str], Run] = {}
    for r in runs:
        key = (r.model, r.setting)
        if key not in best or r.seed < best[key].seed:
            best[key] = r
    return sorted(best.values(), key=lambda r: (r.model, setting_rank(r), r.setting))


def find_runs(root: str | Path) -> list[Run]:
    """Finished runs under ``root``, the lowest seed per model x setting (for figures)."""
    return lowest_seeds(finished_runs(root, quiet=False))
