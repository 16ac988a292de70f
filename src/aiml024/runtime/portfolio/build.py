"""Learn the warm-start portfolio offline: `python -m aiml024.runtime.portfolio.build`.

For each task kind (binary, multiclass, regression) this generates synthetic datasets of varied
shapes with scikit-learn's generators (make_classification, make_regression, make_friedman1/2/3),
never the bundled datasets the benchmark scores on, then:

1. per dataset and learner, a small random search (3-fold CV) plus the learner's defaults;
2. the best configuration of each (dataset, learner) becomes a candidate and is scored on every
   dataset of its kind (cross-evaluation, within its learner);
3. each dataset's scores are normalized to [0, 1] (1 = the best candidate there), and candidates
   are chosen greedily per learner: first the best mean, then the one that most raises the mean
   over datasets of the best score so far (the zero-shot portfolio of Auto-sklearn 2.0 / FLAML).

The result is written beside this file as `<kind>.json` with the seed and a description of the
data, so a rebuild is reproducible. Runs in about twenty minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..learners import Choice, Float, Int, get_learner
from ..metrics import score

SEED = 20250611
HERE = Path(__file__).resolve().parent
KINDS = ("binary", "multiclass", "regression")
METRIC = {"binary": "auc", "multiclass": "logloss", "regression": "rmse"}
PER_LEARNER = 3
# The learners whose spaces are worth a portfolio; linear and knn (one or two dimensions) keep
# their built-in defaults.
TRIALS = {"lightgbm": 4, "xgboost": 4, "random_forest": 2, "extra_trees": 2}
FIT_SECONDS = 3.0


def datasets(kind: str, seed: int) -> list[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """(description, X, y) of the synthetic datasets of one kind."""
    from sklearn import datasets as sk

    rng = np.random.default_rng(seed)
    out = []
    if kind in ("binary", "multiclass"):
        classes = 2 if kind == "binary" else 0
        shapes = [  # rows, features, informative, class_sep, flip_y, minority weight
            (500, 10, 4, 1.0, 0.02, 0.5),
            (1200, 30, 8, 0.7, 0.05, 0.3),
            (1500, 20, 5, 0.5, 0.1, 0.5),
            (800, 60, 10, 1.2, 0.01, 0.15),
        ]
        for i, (n, f, informative, sep, flip, minority) in enumerate(shapes):
            n_classes = classes or (3, 4, 5, 3)[i]
            weights = [minority, 1 - minority] if n_classes == 2 else None
            X, y = sk.make_classification(
                n_samples=n,
                n_features=f,
                n_informative=informative,
                n_redundant=min(4, f - informative),
                n_classes=n_classes,
                n_clusters_per_class=2,
                class_sep=sep,
                flip_y=flip,
                weights=weights,
                random_state=int(rng.integers(1 << 30)),
            )
            description = {
                "generator": "make_classification",
                "rows": n,
                "features": f,
                "informative": informative,
                "classes": n_classes,
                "classSep": sep,
                "flipY": flip,
            }
            out.append((description, X, y))
        return out
    generators: list[tuple[str, dict[str, Any]]] = [
        (
            "make_regression",
            {"n_samples": 1000, "n_features": 20, "n_informative": 8, "noise": 10.0},
        ),
        ("make_friedman1", {"n_samples": 900, "n_features": 10, "noise": 1.0}),
        ("make_friedman2", {"n_samples": 600, "noise": 50.0}),
        ("make_friedman3", {"n_samples": 1200, "noise": 0.1}),
    ]
    for name, kwargs in generators:
        X, y = getattr(sk, name)(random_state=int(rng.integers(1 << 30)), **kwargs)
        out.append(({"generator": name, "rows": kwargs["n_samples"],
                     "features": X.shape[1], **{k: v for k, v in kwargs.items()
                                                 if k == "noise"}}, X, y))  # fmt: skip
    return out


def cv_score(kind: str, name: str, params: dict[str, Any], X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.model_selection import KFold, StratifiedKFold

    task = "regression" if kind == "regression" else "classification"
    n_classes = 0 if task == "regression" else int(y.max()) + 1
    splitter = (KFold if task == "regression" else StratifiedKFold)(3, shuffle=True, random_state=0)
    learner = get_learner(name)
    values = []
    for train, val in splitter.split(X, y):
        estimator = learner.make(params, 0, task, n_classes, n_jobs=2)
        learner.fit(estimator, X[train], y[train], X[val], y[val], patience=50,
                    deadline=time.monotonic() + FIT_SECONDS)  # fmt: skip
        values.append(score(METRIC[kind], y[val], learner.predict(estimator, X[val]), n_classes))
    return float(np.mean(values))


def build(kind: str, seed: int = SEED, log: Any = print) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = datasets(kind, seed)
    sign = -1.0 if METRIC[kind] in ("logloss", "rmse") else 1.0
    candidates: list[tuple[str, dict[str, Any]]] = []
    seen: dict[tuple[int, int], float] = {}  # (candidate, dataset) -> signed score
    for d, (description, X, y) in enumerate(data):
        for name in sorted(TRIALS):
            learner = get_learner(name)
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed + d))
            configs = [dict(p) for p in learner.defaults]
            configs += [learner.search_space(study.ask()) for _ in range(TRIALS[name])]
            scored = [(sign * cv_score(kind, name, c, X, y), i) for i, c in enumerate(configs)]
            best_score, best_index = max(scored)
            candidates.append((name, _rounded(configs[best_index])))
            seen[(len(candidates) - 1, d)] = best_score
            log(f"{kind} {description['generator']} {name}: {sign * best_score:.4f}")
    # Cross-evaluate each candidate on the other datasets (within its learner), then normalize
    # per dataset over all candidates.
    raw = np.array(
        [
            [
                seen.get((i, d)) if (i, d) in seen else sign * cv_score(kind, n, p, X, y)
                for d, (_, X, y) in enumerate(data)
            ]
            for i, (n, p) in enumerate(candidates)
        ]
    )
    low, high = raw.min(axis=0), raw.max(axis=0)
    norm = (raw - low) / np.where(high > low, high - low, 1.0)
    configs = []
    for name in sorted(TRIALS):
        rows = [i for i, (n, _) in enumerate(candidates) if n == name]
        chosen: list[int] = []
        best_so_far = np.zeros(len(data))
        while len(chosen) < min(PER_LEARNER, len(rows)):
            gains = {
                i: np.maximum(best_so_far, norm[i]).mean() + 1e-3 * norm[i].mean()
                for i in rows
                if i not in chosen and candidates[i][1] not in [candidates[c][1] for c in chosen]
            }
            if not gains:
                break
            pick = max(gains, key=lambda i: gains[i])
            chosen.append(pick)
            best_so_far = np.maximum(best_so_far, norm[pick])
        for rank, i in enumerate(chosen):
            configs.append(
                {
                    "learner": name,
                    "rank": rank,
                    "params": candidates[i][1],
                    "meanNormalizedScore": round(float(norm[i].mean()), 4),
                }
            )
    return {
        "kind": kind,
        "seed": seed,
        "metric": METRIC[kind],
        "builtBy": "python -m aiml024.runtime.portfolio.build",
        "data": "synthetic only (scikit-learn generators); no dataset the benchmark uses",
        "datasets": [description for description, _, _ in data],
        "configs": configs,
    }


def _rounded(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, float):
            value = float(f"{value:.4g}")
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def in_space(name: str, params: dict[str, Any]) -> list[str]:
    """Problems with one configuration under its learner's search space (empty: valid)."""
    learner = get_learner(name)
    problems = [f"{name}.{k}: not in the search space" for k in set(params) - set(learner.space)]
    problems += [f"{name}.{k}: missing" for k in set(learner.space) - set(params)]
    for key, dim in learner.space.items():
        if key not in params:
            continue
        value = params[key]
        if isinstance(dim, Choice):
            ok = value in dim.options
        elif isinstance(dim, Int):
            ok = isinstance(value, int) and dim.low <= value <= dim.high
        else:
            assert isinstance(dim, Float)
            ok = isinstance(value, int | float) and dim.low <= value <= dim.high
        if not ok:
            problems.append(f"{name}.{key}: {value!r} is outside {dim}")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m aiml024.runtime.portfolio.build")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    for kind in args.kinds:
        document = build(kind, args.seed)
        for config in document["configs"]:
            assert not in_space(config["learner"], config["params"]), config
        path = args.out / f"{kind}.json"
        path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
