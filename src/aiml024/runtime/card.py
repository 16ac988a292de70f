"""The model card: what the model is for, what it learned from, how well it does, its limits.

`build_card` gathers the facts into one JSON document; `render_markdown` writes it for people.
The card is `complete` when every required section holds its facts; policies can require that.
"""

from __future__ import annotations

from typing import Any

REQUIRED_SECTIONS = (
    "intendedUse",
    "owner",
    "data",
    "training",
    "leaderboard",
    "evaluation",
    "pii",
    "limitations",
)
_REQUIRED_FACTS = {
    "data": ("uri", "rows", "fingerprint"),
    "training": ("objective", "trials", "learners"),
    "evaluation": ("metrics", "baselineMetrics", "primaryMetric"),
    "pii": ("action",),
}


def build_card(
    *,
    name: str,
    task: str,
    target: str,
    owner: str | None,
    data: dict[str, Any],
    training: dict[str, Any],
    leaderboard: list[dict[str, Any]],
    evaluation: dict[str, Any],
    pii: dict[str, Any],
    limitations: list[str],
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "model": name,
        "task": task,
        "target": target,
        "intendedUse": (
            f"Predict `{target}` ({task}) for records drawn from the same population as the "
            f"training data ({data.get('uri')}). Decision support only: review before acting "
            "on an individual prediction."
        ),
        "owner": owner,
        "data": data,
        "training": training,
        "leaderboard": leaderboard,
        "evaluation": evaluation,
        "pii": pii,
        "limitations": limitations,
    }
    card["missing"] = missing_sections(card)
    card["complete"] = not card["missing"]
    return card


def missing_sections(card: dict[str, Any]) -> list[str]:
    missing = []
    for section in REQUIRED_SECTIONS:
        value = card.get(section)
        facts = _REQUIRED_FACTS.get(section, ())
        if value in (None, "", [], {}) or any(
            isinstance(value, dict) and value.get(f) in (None, "", {}) for f in facts
        ):
            missing.append(section)
    return missing


def render_markdown(card: dict[str, Any]) -> str:
    data, training, evaluation = card["data"], card["training"], card["evaluation"]
    baseline = evaluation.get("baselineMetrics", {})
    lines = [
        f"# Model card: {card['model']}",
        "",
        f"Card complete: **{'yes' if card['complete'] else 'no'}**"
        + (f" (missing: {', '.join(card['missing'])})" if card["missing"] else ""),
        "",
        "## Intended use",
        "",
        card["intendedUse"],
        "",
        "## Owner",
        "",
        card["owner"] or "_not set: add an `owner` or `team` label to spec.model.labels_",
        "",
        "## Data",
        "",
        *_bullets(
            {
                "Source": data.get("uri"),
                "Rows": data.get("rows"),
                "Fingerprint (sha256)": data.get("fingerprint"),
                "Target": f"`{card['target']}`",
                "Search rows": data.get("trainRows"),
                "Holdout rows": data.get("holdoutRows"),
                "Classes": data.get("classes"),
            }
        ),
        "",
        "## Training procedure",
        "",
        *_bullets(
            {
                "Objective": training.get("objective"),
                "Search": training.get("sampler"),
                "Trials": training.get("trials"),
                "Time budget (s)": training.get("timeBudgetSeconds"),
                "Learners": ", ".join(training.get("learners", [])),
                "Cross-validation folds": training.get("folds"),
                "Seed": training.get("seed"),
                "Chosen model": training.get("chosen"),
                "Members": ", ".join(training.get("members", [])) or None,
            }
        ),
        "",
        "## Leaderboard (cross-validated)",
        "",
        "| rank | model | value | trial | members |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {row['rank']} | {row['name']} | {row['value']:.4f} | {row.get('trial', '')} | "
            f"{', '.join(_weighted(row))} |"
            for row in card["leaderboard"]
        ),
        "",
        "## Holdout evaluation",
        "",
        f"Primary metric: `{evaluation.get('primaryMetric')}`; decision threshold "
        f"{evaluation.get('threshold', 0.5):.3f}. Baseline: default LightGBM on the same "
        "features and rows.",
        "",
        "| metric | model | baseline |",
        "| --- | --- | --- |",
        *(
            f"| {metric} | {value:.4f} | {baseline.get(metric, float('nan')):.4f} |"
            for metric, value in evaluation.get("metrics", {}).items()
        ),
        "",
        *(
            [
                f"Calibration: Brier score {evaluation['calibration']['brier']:.4f}, expected "
                f"calibration error {evaluation['calibration']['ece']:.4f}.",
                "",
            ]
            if evaluation.get("calibration")
            else []
        ),
        "## Personal data",
        "",
        _pii_text(card["pii"]),
        "",
        "## Limitations",
        "",
        *(f"- {item}" for item in card["limitations"]),
        "",
    ]
    return "\n".join(lines)


def _bullets(facts: dict[str, Any]) -> list[str]:
    return [f"- {key}: {value}" for key, value in facts.items() if value not in (None, "")]


def _weighted(row: dict[str, Any]) -> list[str]:
    weights = row.get("weights") or []
    members = row.get("members") or []
    if len(weights) != len(members):
        return list(members)
    return [f"{m} ({w:.2f})" for m, w in zip(members, weights, strict=True)]


def _pii_text(pii: dict[str, Any]) -> str:
    columns = pii.get("columns") or {}
    if not columns:
        return "No column was found to hold personal data."
    listed = ", ".join(f"`{c}` ({kind})" for c, kind in sorted(columns.items()))
    action = pii.get("action")
    how = "masked with fixed tokens" if action == "mask" else "dropped"
    return (
        f"Columns holding personal data: {listed}. They were {how} before training, and the "
        "served pipeline applies the same handling to every request."
    )
