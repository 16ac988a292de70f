"""The Optuna study: its storage, sampler and pruner, the workers' shares, and warm start.

Several workers may share one study (a journal file with a lock, or an RDB URL such as
PostgreSQL): each runs its own share of the trial cap (`worker_quota`) with its own sampler
seed. A trial's params are `learner` and `<learner>.<name>` for the learner's own (see
learners' search spaces); `trial_params` reads them back.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from aiml024.api import ExperimentSpec

from . import portfolio
from .learners import get_learner
from .metrics import parse_objective

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_storage(url: str | None, default_journal: Path) -> Any:
    """Optuna storage: `journal:///path` or empty (a journal file), else an Optuna URL."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if url and not url.startswith("journal://"):
        return rdb_storage(url)
    path = Path(url.removeprefix("journal://")) if url else default_journal
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def rdb_storage(url: str, attempts: int = 6) -> Any:
    """An RDB storage (PostgreSQL in a cluster). N workers starting at once on an empty
    database race to create Optuna's tables: the losers retry once the winner is done. A
    heartbeat lets a live worker mark a crashed worker's RUNNING trials as failed."""
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    for attempt in range(attempts):
        try:
            return RDBStorage(url, heartbeat_interval=30, grace_period=120)
        except sqlalchemy.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def worker_quota(trials: int, workers: int, worker: int) -> int:
    """Worker `worker`'s share of the trial cap; the shares add up to exactly `trials`."""
    return trials // workers + (1 if worker < trials % workers else 0)


def make_pruner(spec: ExperimentSpec, n_folds: int) -> optuna.pruners.BasePruner:
    """spec.search.earlyStopping.pruner over the folds as the resource: a trial reports its
    running mean after each fold and stops early when it falls behind."""
    stopping = spec.search.early_stopping
    if not stopping.enabled or stopping.pruner == "none":
        return optuna.pruners.NopPruner()
    if stopping.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if stopping.pruner == "successive-halving":  # asynchronous (ASHA): no worker waits
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3, min_early_stopping_rate=0
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=max(n_folds, 2), reduction_factor=3
    )


def create_study(
    spec: ExperimentSpec, storage: Any, name: str, n_folds: int, worker: int = 0
) -> optuna.Study:
    """Create or load the study; each worker samples with its own seed (seed + worker)."""
    search = spec.search
    seed = search.seed + worker
    samplers: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            n_startup_trials=8,
            constant_liar=search.parallelism > 1,
        ),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }
    _, direction = parse_objective(spec.effective_objective)
    return optuna.create_study(
        storage=storage,
        sampler=samplers[search.sampler](),
        pruner=make_pruner(spec, n_folds),
        study_name=name,
        direction=direction,
        load_if_exists=True,
    )


def trial_params(trial: optuna.trial.FrozenTrial) -> tuple[str, dict[str, Any]]:
    """(learner, its params without the `<learner>.` prefix) of a trial."""
    learner = str(trial.params["learner"])
    prefix = f"{learner}."
    return learner, {k[len(prefix) :]: v for k, v in trial.params.items() if k.startswith(prefix)}


def warm_start_configs(kind: str, learners: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """The portfolio of this task kind (or a learner's built-in defaults where the portfolio
    has none), round-robin across the spec's learners in their order, at most `limit`."""
    per_learner = {
        name: portfolio.configs(kind, name) or [dict(p) for p in get_learner(name).defaults]
        for name in learners
    }
    configs: list[dict[str, Any]] = []
    depth = max((len(v) for v in per_learner.values()), default=0)
    for i in range(depth):
        for name in learners:
            if i < len(per_learner[name]) and len(configs) < limit:
                params = {f"{name}.{k}": v for k, v in per_learner[name][i].items()}
                configs.append({"learner": name, **params})
    return configs


def enqueue_warm_start(
    study: optuna.Study,
    kind: str,
    learners: Sequence[str],
    limit: int,
    worker: int = 0,
    workers: int = 1,
) -> int:
    """Warm start: queue the portfolio's configurations first (at most `limit`, so no queued
    trial outlives the run). With several workers, worker w queues configurations w, w+N, ...
    so each is queued exactly once without coordination; a restarted worker skips its own."""
    queued = {t.user_attrs.get("warmStart") for t in study.get_trials(deepcopy=False)}
    count = 0
    for j, config in enumerate(warm_start_configs(kind, learners, limit)):
        if j % workers == worker and j not in queued:
            study.enqueue_trial(config, user_attrs={"warmStart": j})
            count += 1
    return count
