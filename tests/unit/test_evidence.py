"""The evidence evaluate produces for a risk officer: fairness over the spec's sensitive
attributes, calibration and the decision threshold, and explanations (SHAP, permutation
importance, PDP/ICE, counterfactuals), each computed on the run's own holdout."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.unit.test_search import TYPES, churn_like, spec, step_params

from aiml024.runtime.bundle import load_bundle
from aiml024.runtime.calibration import choose_calibration, cost_threshold, reliability_curve
from aiml024.runtime.explain import counterfactual, local_explanation, shap_values
from aiml024.runtime.fairness import audit
from aiml024.runtime.steps import evaluate as evaluate_step
from aiml024.runtime.steps import search as search_step

ROWS = 900


def with_age_band(df: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """An age band that is not a feature but rides along monthly contracts (which churn more):
    a model that never sees it still selects the young band far more often."""
    rng = np.random.default_rng(seed)
    monthly = (df["contract"] == "monthly").to_numpy()
    young = rng.random(len(df)) < np.where(monthly, 0.8, 0.1)
    return df.assign(age_band=np.where(young, "18-30", "31+"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evidence")
    clean = with_age_band(churn_like(ROWS, strength=2.0))
    (root / "in").mkdir()
    clean.to_parquet(root / "in" / "clean")
    the_spec = spec(trials=3, learners=["lightgbm"])
    the_spec["fairness"] = {"sensitiveAttributes": ["age_band"]}
    the_spec["explain"] = {"immutableFeatures": ["tenure"], "topFeatures": 3}
    types = {**TYPES, "age_band": "categorical"}
    params = step_params(the_spec, rows=ROWS, types=types)
    params["search"] = search_step.run(params, root / "in", root / "in")
    result = evaluate_step.run(params, root / "in", root / "out")
    return {"root": root, "clean": clean, "params": params, "result": result}


def test_fairness_is_measured_over_the_sensitive_attribute_it_does_not_train_on(
    run: dict[str, Any],
) -> None:
    result = run["result"]
    assert result["sensitiveAttributes"] == ["age_band"]
    parity = result["fairness"]["age_band.demographic_parity_difference"]
    odds = result["fairness"]["age_band.equalized_odds_difference"]
    assert parity > 0.2 and 0 <= odds <= 1  # a disparity a 0.1 gate catches
    assert result["serving"]["latencyP95Ms"] > 0 and result["serving"]["sizeMb"] > 0
    bundle = load_bundle(run["root"] / "out" / "bundle")
    assert "age_band" not in [c.name for c in bundle.meta.columns]
    # Clients may still send it; it is accepted and ignored.
    row = run["clean"].drop(columns=["churned"]).head(2).to_dict(orient="records")
    assert len(bundle.predict(row)) == 2
    card = json.loads((run["root"] / "out" / "card" / "model_card.json").read_text())
    groups = card["evaluation"]["fairness"]["groups"]["age_band"]
    assert {g["group"] for g in groups} == {"18-30", "31+"}
    assert sum(g["count"] for g in groups) == result["holdoutRows"]


def test_explanations_cover_shap_importance_pdp_ice_and_counterfactuals(
    run: dict[str, Any],
) -> None:
    explained = json.loads((run["root"] / "out" / "card" / "explanations.json").read_text())
    shap = explained["shap"]
    assert shap["method"] == "tree-shap" and shap["coverage"] == 1.0
    features = [item["feature"] for item in shap["global"]]
    assert "contract" in features[:3] and "age_band" not in features
    assert "message" in features  # a text column's components count as the column
    assert {item["feature"] for item in explained["permutationImportance"]["importance"]} == set(
        features
    )
    pdp = explained["partialDependence"]
    assert len(pdp) == 3 and all(len(p["pdp"]) == len(p["grid"]) for p in pdp)
    assert all(len(curve) == len(p["grid"]) for p in pdp for curve in p["ice"])
    for example in explained["examples"]:
        changed = {c["feature"] for c in example["counterfactual"]["changes"]}
        assert "tenure" not in changed  # immutable
    assert explained["timings"]["totalSeconds"] > 0


def test_shap_values_add_up_to_the_models_log_odds(run: dict[str, Any]) -> None:
    """One LightGBM member, no calibrator: base + contributions = the member's margin."""
    bundle = load_bundle(run["root"] / "out" / "bundle")
    bundle.pipeline.named_steps["model"].calibrator_ = None
    X = bundle.frame(run["clean"].head(20))
    shap = shap_values(bundle, X)
    p = bundle.pipeline.predict_proba(X)[:, 1]
    margin = np.log(p / (1 - p))
    np.testing.assert_allclose(shap["base"] + shap["values"].sum(axis=1), margin, atol=1e-6)
    local = local_explanation(bundle, X.iloc[[0]])
    assert local["decision"] in ("yes", "no")
    top = [c["contribution"] for c in local["contributions"]]
    assert abs(top[0]) >= abs(top[-1])


def test_a_counterfactual_flips_the_decision_without_touching_immutables(
    run: dict[str, Any],
) -> None:
    bundle = load_bundle(run["root"] / "out" / "bundle")
    X = bundle.frame(run["clean"])
    decided = bundle.predict(X)["label"].to_numpy()
    row = X.iloc[[int(np.flatnonzero(decided == "yes")[0])]]
    found = counterfactual(bundle, row, X, immutable=["tenure"], max_changes=4)
    assert found["decision"] == "yes" and found["flipsTo"] == "no", found
    changed = row.copy()
    for change in found["changes"]:
        assert change["feature"] != "tenure"
        changed[change["feature"]] = change["to"]
    assert bundle.predict(changed)["label"].iloc[0] == "no"


def test_the_cost_matrix_moves_the_threshold(run: dict[str, Any]) -> None:
    root, params = run["root"], {**run["params"]}
    params["spec"] = {**params["spec"], "costMatrix": {"falsePositive": 1, "falseNegative": 10}}
    costly = evaluate_step.run(params, root / "in", root / "costly")
    assert costly["threshold"] < run["result"]["threshold"]
    card = json.loads((root / "costly" / "card" / "model_card.json").read_text())
    assert card["evaluation"]["thresholdRule"] == "costMatrix"
    params["spec"] = {**params["spec"], "task": "regression", "target": "tenure",
                      "costMatrix": {"falsePositive": 1, "falseNegative": 1}}  # fmt: skip
    with pytest.raises(Exception, match="costMatrix applies to binary classification"):
        evaluate_step.run(params, root / "in", root / "bad")


def test_calibration_is_kept_only_when_it_helps_out_of_fold() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(4000)
    y = (rng.random(4000) < truth).astype(int)
    squashed = 0.5 + (truth - 0.5) * 0.3  # right order, far too timid: calibration helps
    calibrator, report = choose_calibration(squashed, y)
    assert calibrator is not None and report["method"] in ("isotonic", "sigmoid")
    assert report["brierAfter"] < report["brierBefore"]
    _, honest = choose_calibration(truth, y)  # already calibrated: nothing is kept
    assert honest["method"] == "none" and "no calibrator" in honest["reason"]
    curve = reliability_curve(truth, y)
    assert sum(b["rows"] for b in curve) == 4000
    assert all(abs(b["meanPredicted"] - b["observedRate"]) < 0.06 for b in curve)
    # Missing a positive costs ten times a false alarm: the threshold drops well below 0.5.
    assert cost_threshold(truth, y, 1.0, 10.0) < 0.2


def test_fairness_figures_match_a_hand_count() -> None:
    y_true = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    y_pred = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    sensitive = pd.DataFrame({"region": ["a", "a", "a", "a", "b", "b", "b", "b"]})
    figures, tables = audit("classification", y_true, y_pred, sensitive, ["no", "yes"])
    # Selection rate a: 3/4, b: 1/4 -> 0.5; TPR a: 1, b: 0.5; FPR a: 0.5, b: 0 -> 0.5.
    assert figures == {
        "region.demographic_parity_difference": 0.5,
        "region.equalized_odds_difference": 0.5,
    }
    assert [(g["group"], g["count"], g["selection_rate"]) for g in tables["region"]] == [
        ("a", 4, 0.75),
        ("b", 4, 0.25),
    ]


def test_sensitive_attributes_are_features_only_when_allowed() -> None:
    from aiml024.api import ExperimentSpec
    from aiml024.runtime.steps import StepError
    from aiml024.runtime.training import training_data

    clean = with_age_band(churn_like(50))
    base = {**spec(), "fairness": {"sensitiveAttributes": ["age_band"]}}
    kept_out = training_data(clean, ExperimentSpec.model_validate(base))
    assert "age_band" not in kept_out.X.columns
    assert kept_out.sensitive is not None and list(kept_out.sensitive.columns) == ["age_band"]
    allowed = {**base, "fairness": {"sensitiveAttributes": ["age_band"], "allowAsFeatures": True}}
    assert "age_band" in training_data(clean, ExperimentSpec.model_validate(allowed)).X.columns
    missing = {**base, "fairness": {"sensitiveAttributes": ["gender"]}}
    with pytest.raises(StepError, match="fairness.sensitiveAttributes 'gender' are not columns"):
        training_data(clean, ExperimentSpec.model_validate(missing))
    typo = {**base, "explain": {"immutableFeatures": ["tenur"]}}  # never silently ignored
    with pytest.raises(StepError, match="explain.immutableFeatures 'tenur' are not columns"):
        training_data(clean, ExperimentSpec.model_validate(typo))


def test_the_fairness_gate_denies_the_disparity_the_run_measured(run: dict[str, Any]) -> None:
    """The real figures from the run above, in an otherwise approvable model: production is
    denied for the age band's demographic parity, with the figure in the violation."""
    from tests.unit.test_policy_gate import approval, make_model

    from aiml024.api.model import Evidence
    from aiml024.policy import default_policy_dir, evaluate

    measured = run["result"]
    good = make_model()
    assert good.status is not None
    evidence = good.status.evidence.model_copy(
        update={"fairness": measured["fairness"],
                "sensitive_attributes": measured["sensitiveAttributes"]}
    )  # fmt: skip
    model = make_model(evidence=Evidence.model_validate(evidence.model_dump()))
    gate = evaluate(model, "production", default_policy_dir(), [approval("bob", "production")])
    assert gate.decision == "deny"
    parity = measured["fairness"]["age_band.demographic_parity_difference"]
    assert any(
        v.startswith("fairness_demographic_parity") and "age_band" in v and f"{parity}"[:4] in v
        for v in gate.violations
    ), gate.violations
    fair = make_model()  # the same model with the good fixture's small disparity passes
    assert evaluate(fair, "production", default_policy_dir(), [approval("bob", "production")]
                    ).decision == "allow"  # fmt: skip


def test_a_counterfactual_for_any_row_needs_only_the_bundle(run: dict[str, Any]) -> None:
    """The bundle keeps what each column may change to and the immutable columns, so the
    server can answer for a row it has never seen."""
    bundle = load_bundle(run["root"] / "out" / "bundle")
    assert bundle.meta.immutable_features == ["tenure"]
    assert set(bundle.meta.counterfactual_values) == {c.name for c in bundle.meta.columns}
    X = bundle.frame(run["clean"])
    decided = bundle.predict(X)["label"].to_numpy()
    row = X.iloc[[int(np.flatnonzero(decided == "yes")[0])]]
    found = counterfactual(bundle, row)
    assert found["immutable"] == ["tenure"] and found["flipsTo"] == "no", found
    assert all(c["feature"] != "tenure" for c in found["changes"])
