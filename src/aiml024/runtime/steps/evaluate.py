"""The evaluate step: refit the chosen model on the search rows, score it on the holdout
against a default-LightGBM baseline, and write the bundle and the model card.

Serving constraints (spec.constraints.latencyP95Ms, maxModelSizeMb) make the choice
multi-objective, post hoc over the leaderboard: candidates are refit in rank order (best
cross-validated value first, at most MAX_CONSTRAINED_CANDIDATES) and each one's p95 latency of
a single-row `Bundle.predict` (the serving path, LATENCY_REPEATS calls) and pickled size are
measured; the first that meets every constraint is the best feasible point of the Pareto front
and is chosen. When none does, the candidate that violates them least is kept and the card says
so. The card's leaderboard shows latencyP95Ms and sizeMb of every measured candidate, and the
constraint outcome.

Params: api.step_params.EvaluateParams (the ingest, validate and search results, typed).
Inputs: `clean` (parquet), `search/` (split.json, leaderboard.json, oof/). Outputs: `bundle/`
(aiml024.runtime.bundle), `card/` (model_card.md, model_card.json).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from aiml024.api import ExperimentSpec
from aiml024.api.data_steps import ValidateResult
from aiml024.api.step_params import EvaluateParams
from aiml024.api.steps import EvaluateResult, Leaderboard, LeaderboardRow

from .. import available_cpus, step_clock
from ..artifacts import (
    EXPLANATIONS_FILE,
    LEADERBOARD_FILE,
    OOF_DIR,
    REPORT_FILE,
    SEARCH,
    SPLIT_FILE,
    STUDY_JOURNAL,
    oof_file,
    read_json,
    read_model,
    write_json,
)
from ..budget import explain_seconds, fit_budget
from ..bundle import Bundle, BundleMeta, InputColumn, save_bundle
from ..calibration import choose_calibration, cost_threshold, reliability_curve
from ..card import build_card, render_markdown
from ..drift import build_profile, write_profile
from ..ensemble import blend
from ..explain import candidate_values, explain_model
from ..fairness import audit
from ..learners import EnsembleEstimator
from ..metrics import (
    all_metrics,
    best_f1_threshold,
    better,
    calibration,
    direction_of,
    parse_objective,
    score,
)
from ..pii import PiiMasker
from ..report import Holdout, load_history, render_report
from ..splits import split_from_document
from ..training import TrainingData, load_training, make_featurizer
from . import StepError, parse_params, study_name

SERVABLE_TYPES = ("numeric", "categorical", "datetime", "text", "boolean")
LATENCY_REPEATS = 50
MAX_CONSTRAINED_CANDIDATES = 4


def masker_action(validated: ValidateResult) -> str:
    """How the served pipeline treats the PII columns validate found: as validate did (mask
    or drop). With none found ("none": no scan) the masker has no columns; it masks."""
    return validated.pii_action if validated.pii_action in ("mask", "drop") else "mask"


def run(params: Mapping[str, Any] | EvaluateParams, inputs: Path, outputs: Path) -> dict[str, Any]:
    started = step_clock()  # the dispatcher's process start: imports count
    typed = parse_params(EvaluateParams, params)
    spec, validated = typed.spec, typed.validate_result
    search_dir = inputs / SEARCH
    clean, data = load_training(inputs, spec, validated)
    split = split_from_document(read_json(search_dir / SPLIT_FILE, "search"), data)
    document = read_model(search_dir / LEADERBOARD_FILE, Leaderboard, "search")
    board = document.rows
    metric = parse_objective(spec.effective_objective)[0]
    trials = {row.trial: row for row in board if row.trial is not None}
    dropped_members = fit_budget(board, document.budget, started)

    pii = dict(validated.pii)
    pii_action = masker_action(validated)
    meta = bundle_meta(spec, data, clean, pii, pii_action, typed.code_version)
    # Columns validate dropped (empty, constant) still arrive from clients: accept, ignore.
    known = {c.name for c in meta.columns}
    # So are the sensitive attributes when they are not features.
    meta.ignored_columns = sorted(
        {c for c in validated.dropped_columns if c not in known}
        | {c for c in spec.fairness.sensitive_attributes if c not in known}
    )
    # Train on exactly what the server will see: requests are typed by Bundle.frame.
    X = Bundle(None, meta).frame(data.X)
    labels = _labels(data)
    X_train, X_hold = X.iloc[split.train], X.iloc[split.holdout]
    y_train, y_hold = labels[split.train], data.y[split.holdout]
    meta.counterfactual_values = {c: candidate_values(X_train[c]) for c in X.columns}
    meta.immutable_features = list(spec.explain.immutable_features)

    def fit(row: LeaderboardRow) -> Pipeline:
        return candidate_pipeline(spec, data, row, trials, pii, pii_action).fit(X_train, y_train)

    sample = data.X.iloc[split.holdout[:1]]
    constraints = spec.constraints
    if constraints.latency_p95_ms is None and constraints.max_model_size_mb is None:
        chosen = choose(board, metric)
        model = fit(chosen)
        costs = {id(chosen): serving_cost(model, meta, sample)}
        outcome: dict[str, Any] = {"constrained": False}
    else:
        chosen, model, costs, outcome = choose_within_constraints(
            board, metric, fit, lambda m: serving_cost(m, meta, sample), constraints
        )
    members, weights = candidate_members(chosen)
    if dropped_members:
        outcome["droppedMembers"] = dropped_members
    meta.learner = chosen.learner
    meta.members = members
    baseline = baseline_pipeline(spec, data).fit(X_train, data.y[split.train])

    calibrated, threshold = decide_probabilities(spec, data, split, model, search_dir, members,
                                                 weights)  # fmt: skip
    meta.threshold = threshold

    result = holdout_scores(model, baseline, X_hold, y_hold, data, threshold)
    result["calibrationChoice"] = calibrated
    # The drift monitors' reference (training inputs, holdout scores): inside the bundle, so
    # its digest covers it.
    held_out = Bundle(model, meta).predict(X_hold)
    write_profile(
        outputs / "bundle", build_profile(X_train, held_out["score"], spec.search.seed, meta)
    )
    digest = save_bundle(outputs / "bundle", model, meta)
    served = Bundle(model, meta)
    figures, groups = fairness_audit(data, split, served, X_hold)
    result["fairness"] = {"figures": figures, "groups": groups}

    card_dir = outputs / "card"
    card_dir.mkdir(parents=True, exist_ok=True)
    explanations = explain_model(
        served, X_hold, y_hold, _explain_score(metric, data),
        budget_seconds=explain_seconds(spec.search.time_budget_seconds),
        top_features=spec.explain.top_features, immutable=spec.explain.immutable_features,
        seed=spec.search.seed,
    )  # fmt: skip
    if data.task == "classification" and data.n_classes == 2:
        explanations["calibration"] = {
            **calibrated,
            "reliability": reliability_curve(served.predict_proba(X_hold).to_numpy()[:, 1],
                                             y_hold),
        }  # fmt: skip
    write_json(card_dir / EXPLANATIONS_FILE, explanations)

    measured = [
        {**row.wire(), **costs[id(row)]} if id(row) in costs else row.wire() for row in board
    ]
    card = model_card(
        typed, data, split, measured, chosen, members, result, pii, pii_action, outcome
    )
    write_json(card_dir / "model_card.json", card)
    (card_dir / "model_card.md").write_text(render_markdown(card))
    history = load_history(typed.study_storage or (search_dir / STUDY_JOURNAL), study_name(typed))
    decided = held_out
    if data.task == "regression":
        holdout = Holdout(truth=y_hold, predicted=decided["score"].to_numpy())
    else:  # y_hold holds class codes: the report shows labels
        holdout = Holdout(
            truth=np.asarray(data.classes, dtype=object)[y_hold],
            predicted=decided["label"].to_numpy(),
            classes=list(data.classes),
        )
    (card_dir / REPORT_FILE).write_text(
        render_report(card, explanations, history, holdout), encoding="utf-8"
    )
    return EvaluateResult(
        metrics=result["metrics"],
        baseline_metrics=result["baseline"],
        primary_metric=parse_objective(spec.effective_objective)[0],
        sha256=digest,
        learner=chosen.learner,
        members=members,
        weights=list(weights),
        calibration=result["calibration"],
        fairness=figures,
        sensitive_attributes=list(spec.fairness.sensitive_attributes),
        serving=dict(costs.get(id(chosen), {})),
        card_complete=card["complete"],
        threshold=threshold,
        trial=_best_trial(board),
        holdout_rows=len(split.holdout),
    ).wire()


def decide_probabilities(
    spec: ExperimentSpec,
    data: TrainingData,
    split: Any,
    model: Pipeline,
    search_dir: Path,
    members: list[str],
    weights: list[float],
) -> tuple[dict[str, Any], float]:
    """Binary classification: calibrate (isotonic or sigmoid, when it helps on out-of-fold
    predictions; set on the served model) and pick the decision threshold (spec.costMatrix's
    least expected cost, else the best F1 for maximize_f1, else 0.5), both on the out-of-fold
    predictions of the chosen members. Returns what was decided (for the card) and the
    threshold."""
    if spec.cost_matrix is not None and not (data.task == "classification"
                                             and data.n_classes == 2):  # fmt: skip
        raise StepError(
            f"spec.costMatrix needs binary classification; the target has {data.n_classes} classes"
            if data.task == "classification"
            else "spec.costMatrix needs binary classification, not regression"
        )
    if not (data.task == "classification" and data.n_classes == 2):
        return {"method": "none", "reason": "calibration applies to binary classification"}, 0.5
    oof = blend(
        [np.load(search_dir / OOF_DIR / oof_file(member_trial(m))) for m in members], weights
    )[:, 1]
    y_oof = data.y[split.train]
    calibrator, report = choose_calibration(oof, y_oof, spec.search.seed)
    if calibrator is not None:
        model.named_steps["model"].calibrator_ = calibrator
        oof = calibrator.positive(oof)
    threshold, rule = 0.5, "default"
    if spec.cost_matrix is not None:
        costs = spec.cost_matrix
        threshold = cost_threshold(oof, y_oof, costs.false_positive, costs.false_negative)
        rule = "costMatrix"
    elif spec.effective_objective == "maximize_f1":
        threshold, rule = best_f1_threshold(y_oof, oof), "maximize_f1"
    report["threshold"] = {"value": round(threshold, 6), "rule": rule}
    return report, threshold


def fairness_audit(
    data: TrainingData, split: Any, served: Bundle, X_hold: pd.DataFrame
) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """The holdout's fairness figures and group tables, over spec.fairness.sensitiveAttributes."""
    if data.sensitive is None:
        return {}, {}
    sensitive = data.sensitive.iloc[split.holdout].reset_index(drop=True)
    y_true = data.y[split.holdout]
    if data.task == "regression":
        y_pred = np.asarray(served.pipeline.predict(X_hold), dtype=float)
    else:
        decided = served.predict(X_hold)["label"].to_numpy()
        lookup = {c: i for i, c in enumerate(data.classes)}
        y_pred = np.asarray([lookup[v] for v in decided], dtype=np.int64)
    return audit(data.task, y_true, y_pred, sensitive, list(data.classes))


def _explain_score(metric: str, data: TrainingData) -> Any:
    """The primary metric as permutation importance takes it: higher is better."""
    sign = 1.0 if direction_of(metric) == "maximize" else -1.0

    def measured(y: np.ndarray, output: np.ndarray) -> float:
        return sign * score(metric, y, output, data.n_classes)

    return measured


def candidate_pipeline(
    spec: ExperimentSpec,
    data: TrainingData,
    row: LeaderboardRow,
    trials: dict[int, LeaderboardRow],
    pii: dict[str, str],
    pii_action: str,
) -> Pipeline:
    """The unfitted served pipeline of one leaderboard row (a trial or the ensemble)."""
    members, weights = candidate_members(row)
    member_rows = [trials[member_trial(m)] for m in members]
    return Pipeline(
        [
            ("pii", PiiMasker(columns=pii, action=pii_action)),
            ("features", make_featurizer(spec, data.types)),
            (
                "model",
                EnsembleEstimator(
                    members=[(r.learner, r.params, r.best_iteration) for r in member_rows],
                    weights=list(weights),
                    task=data.task,
                    classes=data.classes or None,
                    seed=spec.search.seed,
                    n_jobs=available_cpus(),
                ),
            ),
        ]
    )


def serving_cost(model: Pipeline, meta: BundleMeta, sample: pd.DataFrame) -> dict[str, float]:
    """p95 latency (ms) of Bundle.predict on one raw row, and the pickled model size (MB)."""
    bundle = Bundle(model, meta)
    bundle.predict(sample)  # warm up lazy imports and caches
    timings = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        bundle.predict(sample)
        timings.append((time.perf_counter() - started) * 1000.0)
    size = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)) / 1e6
    return {
        "latencyP95Ms": round(float(np.percentile(timings, 95)), 3),
        "sizeMb": round(size, 3),
    }


def choose_within_constraints(
    board: list[LeaderboardRow],
    metric: str,
    fit: Any,
    measure: Any,
    constraints: Any,
) -> tuple[LeaderboardRow, Pipeline, dict[int, dict[str, float]], dict[str, Any]]:
    """The best candidate (rank order) that meets latencyP95Ms and maxModelSizeMb; else the
    one that misses them least. Returns it, its fitted model, the measured costs by row id and
    the outcome for the card."""
    limits = {"latencyP95Ms": constraints.latency_p95_ms, "sizeMb": constraints.max_model_size_mb}
    limits = {k: v for k, v in limits.items() if v is not None}
    ranked = sorted(board, key=lambda row: row.rank)[:MAX_CONSTRAINED_CANDIDATES]
    costs: dict[int, dict[str, float]] = {}
    fallback: tuple[float, LeaderboardRow, Pipeline] | None = None
    for row in ranked:
        model = fit(row)
        cost = costs[id(row)] = measure(model)
        excess = max(cost[k] / v for k, v in limits.items())
        if excess <= 1.0:
            outcome = {"constrained": True, "limits": limits, "met": True, "rank": row.rank,
                       "measured": len(costs)}  # fmt: skip
            return row, model, costs, outcome
        if fallback is None or excess < fallback[0]:
            fallback = (excess, row, model)
    assert fallback is not None
    _, row, model = fallback
    outcome = {"constrained": True, "limits": limits, "met": False, "rank": row.rank,
               "measured": len(costs)}  # fmt: skip
    return row, model, costs, outcome


def choose(board: list[LeaderboardRow], metric: str) -> LeaderboardRow:
    """The ensemble if it beat the best single trial in cross-validation, else that trial."""
    singles = [row for row in board if row.trial is not None]
    best = min(singles, key=lambda row: row.rank)
    ensemble = next((row for row in board if row.name == "ensemble"), None)
    if ensemble and better(metric, ensemble.value, best.value):
        return ensemble
    return best


def candidate_members(row: LeaderboardRow) -> tuple[list[str], list[float]]:
    """('<learner>#<trial>' each, their weights): the ensemble's members, or the trial alone."""
    if row.members:
        return list(row.members), list(row.weights)
    return [f"{row.learner}#{row.trial}"], [1.0]


def member_trial(member: str) -> int:
    """The trial number of an ensemble member, '<learner>#<trial>'."""
    return int(member.rsplit("#", 1)[1])


def _best_trial(board: list[LeaderboardRow]) -> int:
    best = min((r for r in board if r.trial is not None), key=lambda r: r.rank)
    assert best.trial is not None
    return best.trial


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
    params: EvaluateParams,
    data: TrainingData,
    split: Any,
    board: list[dict[str, Any]],
    chosen: LeaderboardRow,
    members: list[str],
    result: dict[str, Any],
    pii: dict[str, str],
    pii_action: str,
    outcome: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec, ingest, search = params.spec, params.ingest_result, params.search_result
    experiment = params.experiment
    labels = spec.model.labels if spec.model else {}
    metric = parse_objective(spec.effective_objective)[0]
    limitations = [
        f"Trained on {len(split.train)} rows of {ingest.uri}; inputs "
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
    outcome = outcome or {"constrained": False}
    if outcome.get("droppedMembers"):
        limitations.append(
            "Ensemble members left out to keep timeBudgetSeconds (their refit would not fit): "
            + ", ".join(outcome["droppedMembers"])
            + "."
        )
    if outcome["constrained"]:
        wanted = ", ".join(f"{k} <= {v}" for k, v in outcome["limits"].items())
        if outcome["met"]:
            limitations.append(
                f"Serving constraints ({wanted}) met by the leaderboard's rank {outcome['rank']} "
                f"candidate ({outcome['measured']} measured); better-scoring candidates did not."
                if outcome["rank"] > 1
                else f"Serving constraints ({wanted}) met by the best candidate."
            )
        else:
            limitations.append(
                f"No candidate met the serving constraints ({wanted}); the one closest to them "
                f"(rank {outcome['rank']}) was kept."
            )
    return build_card(
        name=(spec.model.name if spec.model else f"{experiment}-model"),
        task=data.task,
        target=spec.target,
        owner=labels.get("owner") or labels.get("team"),
        data={
            "uri": ingest.uri,
            "rows": ingest.rows,
            "fingerprint": ingest.fingerprint,
            "trainRows": len(split.train),
            "holdoutRows": len(split.holdout),
            "classes": data.classes or None,
        },
        training={
            "objective": spec.effective_objective,
            "sampler": spec.search.sampler,
            "trials": f"{search.trials_completed} of {spec.search.trials}",
            "timeBudgetSeconds": spec.search.time_budget_seconds,
            "learners": list(spec.search.learners),
            "folds": spec.split.folds,
            "seed": spec.search.seed,
            "chosen": chosen.learner,
            "members": members,
        },
        leaderboard=[
            {
                k: row[k]
                for k in (
                    "rank",
                    "name",
                    "value",
                    "trial",
                    "members",
                    "weights",
                    "latencyP95Ms",
                    "sizeMb",
                )  # fmt: skip
                if k in row
            }
            for row in board
        ],
        evaluation={
            "primaryMetric": metric,
            "metrics": result["metrics"],
            "baselineMetrics": result["baseline"],
            "calibration": result["calibration"],
            "calibrationMethod": result.get("calibrationChoice", {}).get("method", "none"),
            "threshold": result["threshold"],
            "thresholdRule": result.get("calibrationChoice", {})
            .get("threshold", {})
            .get("rule", "default"),
            "fairness": result.get("fairness", {"figures": {}, "groups": {}}),
            "constraints": outcome,
        },
        pii={"columns": pii, "action": pii_action if pii else "none"},
        limitations=limitations,
    )


def _labels(data: TrainingData) -> np.ndarray:
    if data.task == "regression":
        return data.y
    return np.asarray(data.classes, dtype=object)[data.y]
