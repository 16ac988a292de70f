"""The evaluate step: refit the chosen model on the search rows, score it on the holdout
against a default-LightGBM baseline, and write the bundle and the model card.

Inputs: `clean` (parquet), `search/` (split.json, leaderboard.json, oof/). Outputs: `bundle/`
(aiml024.runtime.bundle), `card/` (model_card.md, model_card.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from aiml024.api import ExperimentSpec
from aiml024.api.steps import EvaluateResult

from .. import available_cpus
from ..bundle import Bundle, BundleMeta, InputColumn, save_bundle
from ..card import build_card, render_markdown
from ..learners import EnsembleEstimator
from ..metrics import all_metrics, best_f1_threshold, better, calibration, parse_objective
from ..pii import PiiMasker
from ..search import DataError, TrainingData, blend, make_featurizer, split_from_document
from . import StepError, spec_from
from .search import LEADERBOARD_FILE, SPLIT_FILE, load_training, write_json

SERVABLE_TYPES = ("numeric", "categorical", "datetime", "text", "boolean")


def run(params: dict[str, Any], inputs: Path, outputs: Path) -> dict[str, Any]:
    spec = spec_from(params)
    validate = params.get("validate") or {}
    search_dir = inputs / "search"
    clean, data = load_training(params, spec, inputs)
    try:
        split = split_from_document(_read_json(search_dir / SPLIT_FILE), data)
    except DataError as error:
        raise StepError(str(error)) from None
    board = _read_json(search_dir / LEADERBOARD_FILE)["rows"]
    chosen = choose(board, parse_objective(spec.effective_objective)[0])
    members = chosen.get("members") or [f"{chosen['learner']}#{chosen['trial']}"]
    weights = chosen.get("weights") or [1.0]
    trials = {row["trial"]: row for row in board if row.get("trial") is not None}
    member_rows = [trials[int(m.rsplit("#", 1)[1])] for m in members]

    pii = dict(validate.get("pii") or {})
    pii_action = (
        validate.get("piiAction") if validate.get("piiAction") in ("mask", "drop") else "mask"
    )
    meta = bundle_meta(spec, data, clean, pii, pii_action, params.get("codeVersion", ""))
    meta.learner = chosen["learner"]
    meta.members = members
    # Columns validate dropped (empty, constant) still arrive from clients: accept, ignore.
    known = {c.name for c in meta.columns}
    dropped = params.get("validate", {}).get("droppedColumns", {})
    meta.ignored_columns = sorted(c for c in dropped if c not in known)
    # Train on exactly what the server will see: requests are typed by Bundle.frame.
    X = Bundle(None, meta).frame(data.X)
    labels = _labels(data)
    X_train, X_hold = X.iloc[split.train], X.iloc[split.holdout]
    y_train, y_hold = labels[split.train], data.y[split.holdout]

    model = Pipeline(
        [
            ("pii", PiiMasker(columns=pii, action=pii_action)),
            ("features", make_featurizer(spec, data.types)),
            (
                "model",
                EnsembleEstimator(
                    members=[
                        (r["learner"], r["params"], r.get("bestIteration")) for r in member_rows
                    ],
                    weights=list(weights),
                    task=data.task,
                    classes=data.classes or None,
                    seed=spec.search.seed,
                    n_jobs=available_cpus(),
                ),
            ),
        ]
    )
    model.fit(X_train, y_train)
    baseline = baseline_pipeline(spec, data).fit(X_train, data.y[split.train])

    threshold = 0.5
    if spec.effective_objective == "maximize_f1" and data.n_classes == 2:
        oof = blend(
            [np.load(search_dir / "oof" / f"trial-{r['trial']}.npy") for r in member_rows], weights
        )
        threshold = best_f1_threshold(data.y[split.train], oof[:, 1])
    meta.threshold = threshold

    result = holdout_scores(model, baseline, X_hold, y_hold, data, threshold)
    digest = save_bundle(outputs / "bundle", model, meta)

    card = model_card(params, spec, data, split, board, chosen, members, result, pii, pii_action)
    card_dir = outputs / "card"
    card_dir.mkdir(parents=True, exist_ok=True)
    write_json(card_dir / "model_card.json", card)
    (card_dir / "model_card.md").write_text(render_markdown(card))
    return EvaluateResult(
        metrics=result["metrics"],
        baseline_metrics=result["baseline"],
        primary_metric=parse_objective(spec.effective_objective)[0],
        sha256=digest,
        learner=chosen["learner"],
        members=members,
        weights=list(weights),
        calibration=result["calibration"],
        card_complete=card["complete"],
        threshold=threshold,
        trial=_best_trial(board),
        holdout_rows=len(split.holdout),
    ).wire()


def choose(board: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The ensemble if it beat the best single trial in cross-validation, else that trial."""
    singles = [row for row in board if row.get("trial") is not None]
    best = min(singles, key=lambda row: row["rank"])
    ensemble = next((row for row in board if row["name"] == "ensemble"), None)
    if ensemble and better(metric, ensemble["value"], best["value"]):
        return ensemble
    return best


def _best_trial(board: list[dict[str, Any]]) -> int:
    return min((r for r in board if r.get("trial") is not None), key=lambda r: r["rank"])["trial"]


def bundle_meta(
    spec: ExperimentSpec,
    data: TrainingData,
    clean: pd.DataFrame,
    pii: dict[str, str],
    pii_action: str,
    code_version: str,
) -> BundleMeta:
    """Input columns: every non-target, non-id column with the dtype requests are read as."""
    columns = []
    for name in data.X.columns:
        kind = data.types.get(name, "categorical")
        if name in spec.features.text_columns:
            kind = "text"
        if kind == "boolean" and not (
            pd.api.types.is_bool_dtype(clean[name]) or pd.api.types.is_numeric_dtype(clean[name])
        ):
            kind = "categorical"  # 'yes'/'no' strings: the Featurizer reads them as booleans
        if kind not in SERVABLE_TYPES or (name in pii and kind != "text"):
            kind = "categorical"
        columns.append(InputColumn(name=name, dtype=kind))
    # Dropped PII columns may still arrive in requests; the pipeline drops them again.
    columns += [InputColumn(name=c, dtype="categorical") for c in pii if c not in data.X.columns]
    classes = list(data.classes)
    return BundleMeta(
        task=data.task,
        target=spec.target,
        id_column=spec.id_column,
        columns=columns,
        classes=classes,
        positive_class=classes[1] if len(classes) == 2 else None,
        code_version=code_version,
    )


def baseline_pipeline(spec: ExperimentSpec, data: TrainingData) -> Pipeline:
    import lightgbm

    cls = lightgbm.LGBMRegressor if data.task == "regression" else lightgbm.LGBMClassifier
    return Pipeline(
        [
            ("features", make_featurizer(spec, data.types)),
            ("model", cls(random_state=spec.search.seed, verbose=-1)),
        ]
    )


def holdout_scores(
    model: Pipeline,
    baseline: Pipeline,
    X: pd.DataFrame,
    y: np.ndarray,
    data: TrainingData,
    threshold: float,
) -> dict[str, Any]:
    if data.task == "regression":
        return {
            "metrics": all_metrics("regression", y, model.predict(X)),
            "baseline": all_metrics("regression", y, baseline.predict(X)),
            "calibration": {},
            "threshold": threshold,
        }
    proba = model.predict_proba(X)
    return {
        "metrics": all_metrics(data.task, y, proba, data.n_classes, threshold),
        "baseline": all_metrics(data.task, y, baseline.predict_proba(X), data.n_classes),
        "calibration": calibration(y, proba),
        "threshold": threshold,
    }


def model_card(
    params: dict[str, Any],
    spec: ExperimentSpec,
    data: TrainingData,
    split: Any,
    board: list[dict[str, Any]],
    chosen: dict[str, Any],
    members: list[str],
    result: dict[str, Any],
    pii: dict[str, str],
    pii_action: str,
) -> dict[str, Any]:
    ingest = params.get("ingest") or {}
    search = params.get("search") or {}
    experiment = params.get("experiment", "")
    labels = spec.model.labels if spec.model else {}
    metric = parse_objective(spec.effective_objective)[0]
    limitations = [
        f"Trained on {len(split.train)} rows of {ingest.get('uri') or spec.data.uri}; inputs "
        "unlike that population (new categories, shifted ranges) get unreliable predictions.",
        f"Holdout metrics estimate performance from {len(split.holdout)} rows; monitor drift "
        "after deployment.",
    ]
    if better(
        metric, result["baseline"].get(metric, np.nan), result["metrics"].get(metric, np.nan)
    ):
        limitations.append("The default-LightGBM baseline scored better on the holdout.")
    if result["calibration"].get("ece", 0.0) > 0.05:
        limitations.append("Probabilities are not well calibrated (ECE > 0.05).")
    if pii and pii_action == "mask":
        limitations.append("Masked personal-data columns contribute only their coarse tokens.")
    return build_card(
        name=(spec.model.name if spec.model else f"{experiment}-model"),
        task=data.task,
        target=spec.target,
        owner=labels.get("owner") or labels.get("team"),
        data={
            "uri": ingest.get("uri") or spec.data.uri,
            "rows": ingest.get("rows") or len(data.y),
            "fingerprint": ingest.get("fingerprint"),
            "trainRows": len(split.train),
            "holdoutRows": len(split.holdout),
            "classes": data.classes or None,
        },
        training={
            "objective": spec.effective_objective,
            "sampler": spec.search.sampler,
            "trials": f"{search.get('trialsCompleted', '?')} of {spec.search.trials}",
            "timeBudgetSeconds": spec.search.time_budget_seconds,
            "learners": list(spec.search.learners),
            "folds": spec.split.folds,
            "seed": spec.search.seed,
            "chosen": chosen["learner"],
            "members": members,
        },
        leaderboard=[
            {
                k: row[k]
                for k in ("rank", "name", "value", "trial", "members", "weights")
                if k in row
            }
            for row in board
        ],
        evaluation={
            "primaryMetric": metric,
            "metrics": result["metrics"],
            "baselineMetrics": result["baseline"],
            "calibration": result["calibration"],
            "threshold": result["threshold"],
        },
        pii={"columns": pii, "action": pii_action if pii else "none"},
        limitations=limitations,
    )


def _labels(data: TrainingData) -> np.ndarray:
    if data.task == "regression":
        return data.y
    return np.asarray(data.classes, dtype=object)[data.y]


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise StepError(f"input artifact {path} is missing: run the search step first")
    return json.loads(path.read_text())
