"""The experiment report: one self-contained HTML page per experiment, readable offline.

`render_report` is a pure function of what evaluate already has: the model card
(card/model_card.json), the explanations (card/explanations.json), the study's trial history
(`load_history` reads it from the search step's Optuna storage) and the holdout truth and
predictions (`Holdout`). The page has no script, no font, no image and no link to anywhere
else: its plots are inline SVG drawn here (bars, lines, points), in the fixed `PALETTE`.

Sections: summary, leaderboard, search history, SHAP summary, permutation importance, partial
dependence (PDP and ICE), calibration (binary classification), fairness (when the spec named
sensitive attributes), confusion matrix (classification) or residuals (regression), and
counterfactual examples. A section whose task does not have it is left out (regression has no
calibration and no confusion matrix); a section whose data is missing says so. Every string
that comes from data (column names, category values, class labels) is escaped.
"""

from __future__ import annotations

import html
import math
import numbers
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from .card import format_value, page_head
from .metrics import better, direction_of

# The plots' colours: fixed, so a screenshot shows which marks drew (the page's CSS uses none).
PALETTE: dict[str, str] = {
    "bar": "#7048e8",  # bars: SHAP, permutation importance
    "line": "#f08c00",  # lines: best so far, PDP, reliability curve
    "point": "#0ca678",  # points: trials, categorical PDP, residuals, reliability bins
    "muted": "#adb5bd",  # pruned or failed trials
    "reference": "#868e96",  # the diagonal, the zero line
    "axis": "#495057",
    "cell": "#1971c2",  # confusion-matrix shading (as transparency over white)
}
FAIRNESS_LIMIT = 0.1  # a parity figure above this is highlighted
MAX_BARS = 25
MAX_ICE_LINES = 50
MAX_POINTS = 2000

TrialPoint = tuple[int, float | None, str]  # (number, value, state name)


@dataclass(frozen=True)
class History:
    """The study's trials as (number, value, state), its direction ("maximize" or "minimize";
    None: the card's primary metric's), or why the study could not be read."""

    trials: tuple[TrialPoint, ...] = ()
    direction: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Holdout:
    """The holdout's truth and the served model's predictions (lists or arrays): class labels,
    not codes (classification; `classes` gives the matrix's order, else the card's) or values
    (regression)."""

    truth: Sequence[Any]
    predicted: Sequence[Any]
    classes: Sequence[Any] = field(default_factory=tuple)


def load_history(storage: Any, study_name: str | None = None) -> History:
    """The trials of `study_name` (None: the storage's only study) in an Optuna storage: a
    journal file (a path, or `journal:///path`), an Optuna storage URL, or a storage object.
    A journal is read from a copy (no lock file, nothing written beside it). Never raises:
    an unreadable study comes back as History(error=...)."""
    try:
        import optuna

        with tempfile.TemporaryDirectory(prefix="aiml024-report-") as tmp:
            if isinstance(storage, Path) or (
                isinstance(storage, str)
                and (storage.startswith("journal://") or "://" not in storage)
            ):
                source = Path(str(storage).removeprefix("journal://"))
                if not source.is_file():
                    return History(error=f"no study journal at {source}")
                from optuna.storages import JournalStorage
                from optuna.storages.journal import JournalFileBackend

                copy = Path(tmp) / "study.journal"
                shutil.copyfile(source, copy)
                storage = JournalStorage(JournalFileBackend(str(copy)))
            study = optuna.load_study(study_name=study_name, storage=storage)
            trials = tuple(
                (
                    int(t.number),
                    float(t.value) if t.value is not None else None,
                    t.state.name,
                )
                for t in study.get_trials(deepcopy=False)
            )
            return History(trials=trials, direction=study.direction.name.lower())
    except Exception as error:  # noqa: BLE001 - the page says why instead
        return History(error=f"{type(error).__name__}: {error}")


def render_report(
    card: Mapping[str, Any],
    explanations: Mapping[str, Any] | None = None,
    history: History | Sequence[TrialPoint] | None = None,
    holdout: Holdout | None = None,
) -> str:
    """The report page (HTML, UTF-8 text) of one experiment. Pure: it reads nothing else."""
    card = _dict(card)
    explained = _dict(explanations)
    evaluation = _dict(card.get("evaluation"))
    task = str(card.get("task") or "")
    classification = task == "classification"
    if history is not None and not isinstance(history, History):
        history = History(trials=tuple(_trial_point(t) for t in history))
    sections: list[tuple[str, str, str]] = [
        ("summary", "Summary", _summary(card, evaluation, explained, classification)),
        ("leaderboard", "Leaderboard", _leaderboard(card, evaluation)),
        ("search-history", "Search history", _search_history(card, evaluation, history)),
        ("shap", "SHAP summary", _shap(explained)),
        ("permutation-importance", "Permutation importance", _permutation(explained)),
        ("partial-dependence", "Partial dependence (PDP and ICE)", _pdp(card, explained)),
    ]
    if classification:
        sections.append(("calibration", "Calibration", _calibration(card, evaluation, explained)))
    if _fairness_named(evaluation):
        sections.append(("fairness", "Fairness", _fairness(evaluation)))
    if classification:
        sections.append(("confusion-matrix", "Confusion matrix", _confusion(card, holdout)))
    elif task == "regression":
        sections.append(("residuals", "Residuals", _residuals(holdout)))
    examples = _counterfactuals(explained, task == "regression")
    sections.append(("counterfactuals", "Counterfactual examples", examples))

    title = f"Experiment report: {card.get('model') or 'model'}"
    nav = " ".join(f'<a href="#{anchor}">{_e(name)}</a>' for anchor, name, _ in sections)
    parts = [
        *page_head(title, _STYLE),
        f"<h1>{_e(title)}</h1>",
        f"<nav>{nav}</nav>",
    ]
    for anchor, name, body in sections:
        parts += [f'<section id="{anchor}">', f"<h2>{_e(name)}</h2>", body, "</section>"]
    parts += ["</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


# --- sections ----------------------------------------------------------------------------------

_THRESHOLD_RULES = {
    "default": "the default",
    "maximize_f1": "the best F1 on the out-of-fold predictions",
    "costMatrix": "the least expected cost under spec.costMatrix, on the out-of-fold predictions",
}


def _summary(
    card: dict[str, Any],
    evaluation: dict[str, Any],
    explained: dict[str, Any],
    classification: bool,
) -> str:
    data, training = _dict(card.get("data")), _dict(card.get("training"))
    facts: list[tuple[str, str]] = [
        ("Model", _e(card.get("model"))),
        (
            "Task",
            _e(card.get("task"))
            + (f" of <code>{_e(card['target'])}</code>" if card.get("target") else ""),
        ),
    ]
    if data.get("classes"):
        facts.append(("Classes", ", ".join(f"<code>{_e(c)}</code>" for c in data["classes"])))
    if data:
        facts.append(
            (
                "Rows",
                f"{_e(format_value(data.get('trainRows')))} to train, "
                f"{_e(format_value(data.get('holdoutRows')))} in the holdout",
            )
        )
    if training.get("chosen"):
        members = training.get("members") or []
        chosen = _e(training["chosen"]) + (
            f" ({', '.join(_e(m) for m in members)})" if len(members) > 1 else ""
        )
        facts.append(("Chosen", chosen))
    facts.append(("Primary metric", _primary(evaluation)))
    if classification:
        threshold = evaluation.get("threshold")
        rule = str(evaluation.get("thresholdRule") or "default")
        facts.append(
            (
                "Decision threshold",
                f"{_e(format_value(0.5 if threshold is None else threshold))}: "
                f"{_e(_THRESHOLD_RULES.get(rule, rule))}",
            )
        )
        method = str(evaluation.get("calibrationMethod") or "none")
        reason = _dict(explained.get("calibration")).get("reason")
        facts.append(
            (
                "Calibration method",
                _e(method)
                + (
                    f' <span class="note">({_e(reason)})</span>'
                    if method == "none" and reason
                    else ""
                ),
            )
        )
    else:
        facts.append(("Decision threshold", "none: a regression model decides no class"))
        facts.append(("Calibration method", "none: calibration applies to classification"))
    if not _fairness_named(evaluation):
        facts.append(("Fairness", _NO_FAIRNESS))
    if training:
        facts.append(
            (
                "Search",
                f"{_e(training.get('objective'))}, {_e(training.get('sampler'))} sampler, "
                f"{_e(format_value(training.get('trials')))} trials",
            )
        )
    if card.get("missing"):
        facts.append(("Card missing", ", ".join(_e(m) for m in card["missing"])))
    out = _facts(facts)
    metrics, baseline = _dict(evaluation.get("metrics")), _dict(evaluation.get("baselineMetrics"))
    if metrics:
        rows = [[_e(m), _num_cell(v), _num_cell(baseline.get(m))] for m, v in metrics.items()]
        out += _table(["metric", "model", "default-LightGBM baseline"], rows)
    return out


_NO_FAIRNESS = "not audited: no sensitive attributes were named (spec.fairness.sensitiveAttributes)"


def _primary(evaluation: dict[str, Any]) -> str:
    metric = evaluation.get("primaryMetric")
    if not metric:
        return '<span class="note">not recorded</span>'
    value = _dict(evaluation.get("metrics")).get(metric)
    base = _dict(evaluation.get("baselineMetrics")).get(metric)
    text = f"<code>{_e(metric)}</code> {_e(format_value(value))}"
    if _finite(value) and _finite(base):
        if better(str(metric), float(value), float(base)):
            verdict = '<span class="good">better than</span>'
        elif better(str(metric), float(base), float(value)):
            verdict = '<span class="bad">worse than</span>'
        else:
            verdict = "equal to"
        text += f", {verdict} the default-LightGBM baseline's {_e(format_value(base))}"
    return text


def _leaderboard(card: dict[str, Any], evaluation: dict[str, Any]) -> str:
    board = [row for row in card.get("leaderboard") or [] if isinstance(row, dict)]
    if not board:
        return _note("The card records no leaderboard.")
    costs = any("latencyP95Ms" in row or "sizeMb" in row for row in board)
    header = ["rank", "model", "value", "trial", "members"]
    header += ["p95 latency (ms)", "size (MB)"] if costs else []
    rows = []
    for row in board:
        members = row.get("members") or []
        weights = row.get("weights") or []
        if len(weights) == len(members) and all(_finite(w) for w in weights):
            listed = ", ".join(f"{_e(m)} ({w:.2f})" for m, w in zip(members, weights, strict=True))
        else:
            listed = ", ".join(_e(m) for m in members)
        cells = [
            _num_cell(row.get("rank")),
            _e(row.get("name")),
            _num_cell(row.get("value")),
            _num_cell(row.get("trial")),
            listed,
        ]
        if costs:
            cells += [_num_cell(row.get("latencyP95Ms")), _num_cell(row.get("sizeMb"))]
        rows.append(cells)
    out = _table(header, rows)
    outcome = _dict(evaluation.get("constraints"))
    if outcome.get("constrained"):
        limits = ", ".join(
            f"{_e(k)} &le; {_e(format_value(v))}" for k, v in _dict(outcome.get("limits")).items()
        )
        met = "met" if outcome.get("met") else "not met by any candidate"
        out += _note(
            f"Serving constraints ({limits}) {met}; kept the rank {_e(outcome.get('rank'))} "
            "candidate."
        )
    return out


def _search_history(
    card: dict[str, Any], evaluation: dict[str, Any], history: History | None
) -> str:
    if history is None:
        return _note("The study's trial history was not provided.")
    if history.error:
        return _note(f"The study could not be read: {_e(history.error)}")
    valued = [(n, v, s) for n, v, s in history.trials if _finite(v)]
    if not valued:
        return _note("The study holds no trial with a value.")
    direction = history.direction or _direction(card, evaluation)
    complete = sorted((n, float(v)) for n, v, s in valued if s == "COMPLETE")
    best: list[tuple[float, float]] = []
    for number, value in complete:
        so_far = best[-1][1] if best else value
        kept = max(so_far, value) if direction == "maximize" else min(so_far, value)
        best.append((float(number), kept))
    others = [(float(n), float(v)) for n, v, s in valued if s != "COMPLETE"]
    series = [
        _Series("step", best, PALETTE["line"], width=3.0),
        _Series("points", others, PALETTE["muted"], radius=3.5),
        _Series("points", [(float(n), float(v)) for n, v in complete], PALETTE["point"], radius=4),
    ]
    metric = evaluation.get("primaryMetric") or "value"
    chart = _plot(
        series,
        width=720,
        height=280,
        xlabel="trial number",
        ylabel=f"cross-validated {metric}",
        label="search history",
        integer_x=True,
    )
    counts: dict[str, int] = {}
    for _, _, state in history.trials:
        counts[state] = counts.get(state, 0) + 1
    tally = ", ".join(f"{count} {_e(state.lower())}" for state, count in sorted(counts.items()))
    legend = _legend(
        [
            ("point", "completed trial"),
            ("muted", "pruned or failed trial"),
            ("line", f"best so far ({_e(direction)})"),
        ]
    )
    return f"<figure>{chart}{legend}<figcaption>{tally}.</figcaption></figure>"


def _shap(explained: dict[str, Any]) -> str:
    shap = _dict(explained.get("shap"))
    if not shap:
        return _note("No SHAP values were computed.")
    items = [
        (str(item.get("feature")), float(item["meanAbs"]), None)
        for item in shap.get("global") or []
        if isinstance(item, dict) and _finite(item.get("meanAbs"))
    ]
    if not items:
        return _note(f"No SHAP values: {_e(shap.get('reason') or 'none were computed')}.")
    space = shap.get("space") or "model output"
    chart = _bars(items[:MAX_BARS], label="SHAP summary", value_label=f"mean |SHAP| ({space})")
    coverage = shap.get("coverage")
    note = f"TreeSHAP over {_e(format_value(shap.get('rows')))} holdout rows"
    if _finite(coverage) and float(coverage) < 1.0:
        note += f"; covers {float(coverage):.0%} of the ensemble's weight"
    return f"<figure>{chart}<figcaption>{note}.</figcaption></figure>"


def _permutation(explained: dict[str, Any]) -> str:
    part = _dict(explained.get("permutationImportance"))
    items = [
        (
            str(item.get("feature")),
            float(item["drop"]),
            float(item["std"]) if _finite(item.get("std")) else None,
        )
        for item in part.get("importance") or []
        if isinstance(item, dict) and _finite(item.get("drop"))
    ]
    if not items:
        return _note(_skipped(explained, "permutationImportance", "No permutation importance"))
    items.sort(key=lambda item: -item[1])
    chart = _bars(
        items[:MAX_BARS],
        label="permutation importance",
        value_label="drop in the primary metric when shuffled",
    )
    note = (
        f"Over {_e(format_value(part.get('rows')))} holdout rows; whiskers: one standard deviation"
    )
    return f"<figure>{chart}<figcaption>{note}.</figcaption></figure>"


def _pdp(card: dict[str, Any], explained: dict[str, Any]) -> str:
    curves = [p for p in explained.get("partialDependence") or [] if isinstance(p, dict)]
    if not curves:
        return _note(_skipped(explained, "partialDependence", "No partial dependence"))
    classes = _dict(card.get("data")).get("classes") or []
    if card.get("task") == "regression":
        ylabel = "prediction"
    elif len(classes) == 2:
        ylabel = f"P({_short(classes[1], 16)})"
    else:
        ylabel = "P(predicted class)"
    charts = [_pdp_chart(curve, ylabel) for curve in curves]
    legend = _legend(
        [("line", "PDP (mean)"), ("line-thin", "ICE (one row)"), ("point", "PDP of a category")]
    )
    return f'<div class="grid">{"".join(charts)}</div>{legend}'


def _pdp_chart(curve: dict[str, Any], ylabel: str) -> str:
    feature = str(curve.get("feature"))
    grid = list(curve.get("grid") or [])
    pdp = list(curve.get("pdp") or [])
    ice = [c for c in curve.get("ice") or [] if isinstance(c, list)][:MAX_ICE_LINES]
    numeric = curve.get("kind") == "numeric"
    kept = [i for i, g in enumerate(grid) if g is not None and (not numeric or _finite(g))]
    kept = [i for i in kept if i < len(pdp) and _finite(pdp[i])]
    if not kept:
        return f'<figure class="small">{_note(f"{_e(feature)}: no grid to plot")}</figure>'
    if numeric:
        xs = [float(grid[i]) for i in kept]
        series = [
            _Series(
                "line",
                _pairs(xs, [c[i] if i < len(c) else None for i in kept]),
                PALETTE["line"],
                width=1.0,
                opacity=0.25,
            )
            for c in ice
        ]
        series.append(_Series("line", _pairs(xs, [pdp[i] for i in kept]), PALETTE["line"], 3.0))
        chart = _plot(
            series,
            width=320,
            height=240,
            xlabel=feature,
            ylabel=ylabel,
            label=f"partial dependence of {feature}",
        )
    else:
        labels = [_category(grid[i]) for i in kept]
        positions = [float(j) for j in range(len(kept))]
        series = [
            _Series(
                "points",
                _pairs(positions, [c[i] if i < len(c) else None for i in kept]),
                PALETTE["line"],
                radius=2.0,
                opacity=0.25,
            )
            for c in ice
        ]
        series.append(
            _Series("points", _pairs(positions, [pdp[i] for i in kept]), PALETTE["point"], radius=5)
        )
        chart = _plot(
            series,
            width=320,
            height=240,
            xlabel=feature,
            ylabel=ylabel,
            label=f"partial dependence of {feature}",
            categories=labels,
        )
    return f'<figure class="small">{chart}</figure>'


def _calibration(
    card: dict[str, Any], evaluation: dict[str, Any], explained: dict[str, Any]
) -> str:
    figures = _dict(evaluation.get("calibration"))
    chosen = _dict(explained.get("calibration"))
    facts = [("Method", _e(evaluation.get("calibrationMethod") or chosen.get("method") or "none"))]
    if chosen.get("reason"):
        facts.append(("Why", _e(chosen["reason"])))
    if _finite(figures.get("ece")):
        facts.append(("Expected calibration error (ECE)", _e(format_value(figures["ece"]))))
    if _finite(figures.get("brier")):
        facts.append(("Brier score", _e(format_value(figures["brier"]))))
    for key, label in (
        ("brierBefore", "Out-of-fold Brier before"),
        ("brierAfter", "Out-of-fold Brier after"),
    ):
        if _finite(chosen.get(key)):
            facts.append((label, _e(format_value(chosen[key]))))
    out = _facts(facts)
    bins = [
        b
        for b in chosen.get("reliability") or []
        if isinstance(b, dict)
        and _finite(b.get("meanPredicted"))
        and _finite(b.get("observedRate"))
    ]
    if not bins:
        classes = _dict(card.get("data")).get("classes") or []
        why = (
            "no reliability curve was recorded"
            if len(classes) <= 2
            else "the reliability curve is drawn for binary classification only"
        )
        return out + _note(f"No reliability curve: {why}.")
    points = [(float(b["meanPredicted"]), float(b["observedRate"])) for b in bins]
    series = [
        _Series("line", [(0.0, 0.0), (1.0, 1.0)], PALETTE["reference"], width=1.5, dashed=True),
        _Series("line", points, PALETTE["line"], width=3.0),
        _Series("points", points, PALETTE["point"], radius=4.5),
    ]
    chart = _plot(
        series,
        width=420,
        height=360,
        xlabel="mean predicted probability",
        ylabel="observed positive rate",
        label="reliability curve",
        x_range=(0.0, 1.0),
        y_range=(0.0, 1.0),
    )
    legend = _legend([("line", "model"), ("reference", "perfectly calibrated")])
    caption = "Holdout rows binned by predicted probability: " + ", ".join(
        f"{_e(_value(b.get('low')))}&ndash;{_e(_value(b.get('high')))}: {_e(format_value(b.get('rows')))}"
        for b in bins
    )
    return out + f"<figure>{chart}{legend}<figcaption>{caption}.</figcaption></figure>"


_GROUP_COLUMNS = {
    "count": "count",
    "selection_rate": "selection rate",
    "true_positive_rate": "TPR",
    "false_positive_rate": "FPR",
    "accuracy": "accuracy",
    "mae": "MAE",
}
_FIGURE_LABELS = {
    "demographic_parity_difference": "demographic parity difference",
    "equalized_odds_difference": "equalized odds difference",
}


def _fairness_named(evaluation: dict[str, Any]) -> bool:
    fairness = _dict(evaluation.get("fairness"))
    return bool(_dict(fairness.get("figures")) or _dict(fairness.get("groups")))


def _fairness(evaluation: dict[str, Any]) -> str:
    fairness = _dict(evaluation.get("fairness"))
    groups = _dict(fairness.get("groups"))
    by_attribute: dict[str, dict[str, float]] = {}
    for key, value in _dict(fairness.get("figures")).items():
        attribute, _, figure = str(key).rpartition(".")
        by_attribute.setdefault(attribute or str(key), {})[figure] = value
    if by_attribute:
        intro = (
            "Measured on the holdout, per sensitive attribute: each group's rates, and the "
            "largest gap between groups in selection rate (demographic parity difference) and "
            f"in TPR or FPR (equalized odds difference); gaps above {FAIRNESS_LIMIT} are "
            "highlighted."
        )
    else:
        intro = (
            "Measured on the holdout, per group of each sensitive attribute (no parity figures: "
            "the model decides no class to compare)."
        )
    out = [_note(intro)]
    for attribute in list(groups) + [a for a in by_attribute if a not in groups]:
        out.append(f"<h3><code>{_e(attribute)}</code></h3>")
        rows = [r for r in groups.get(attribute) or [] if isinstance(r, dict)]
        if rows:
            keys = [k for k in _GROUP_COLUMNS if any(k in r for r in rows)]
            keys += [k for r in rows for k in r if k not in keys and k != "group"]
            keys = list(dict.fromkeys(keys))
            header = ["group"] + [_GROUP_COLUMNS.get(k, k) for k in keys]
            body = [
                [_e(_category(r.get("group")))] + [_num_cell(r.get(k)) for k in keys] for r in rows
            ]
            out.append(_table(header, body))
        figures = by_attribute.get(attribute, {})
        if figures:
            cells = []
            for figure, value in figures.items():
                over = _finite(value) and float(value) > FAIRNESS_LIMIT
                value_cell = (
                    f'<td class="num over">{_e(format_value(value))} (above {FAIRNESS_LIMIT})</td>'
                    if over
                    else _num_cell(value)
                )
                cells.append([_e(_FIGURE_LABELS.get(figure, figure)), value_cell])
            out.append(_table(["parity figure", "value"], cells))
    return "\n".join(out)


def _confusion(card: dict[str, Any], holdout: Holdout | None) -> str:
    if holdout is None or not len(holdout.truth):
        return _note("The holdout predictions were not provided.")
    if len(holdout.truth) != len(holdout.predicted):
        return _note("The holdout truth and predictions differ in length.")
    classes = [
        str(c) for c in list(holdout.classes) or _dict(card.get("data")).get("classes") or []
    ]
    truth = [str(v) for v in holdout.truth]
    predicted = [str(v) for v in holdout.predicted]
    seen = sorted((set(truth) | set(predicted)) - set(classes))
    labels = list(dict.fromkeys(classes + seen))
    index = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        counts[index[t]][index[p]] += 1
    total = len(truth)
    correct = sum(counts[i][i] for i in range(len(labels)))
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    rows = []
    for i, label in enumerate(labels):
        row_total = sum(counts[i]) or 1
        cells = "".join(
            f'<td class="num cm" style="background:{_shade(counts[i][j] / row_total)}">'
            f"{counts[i][j]}<br><small>{counts[i][j] / row_total:.0%}</small></td>"
            for j in range(len(labels))
        )
        rows.append(f"<tr><th>{_e(label)}</th>{cells}</tr>")
    table = (
        '<table class="confusion"><thead><tr><th>actual \\ predicted</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return table + _note(
        f"{total} holdout rows, {correct} decided correctly ({correct / total:.1%}); percentages "
        "are of each actual class."
    )


def _residuals(holdout: Holdout | None) -> str:
    if holdout is None or not len(holdout.truth):
        return _note("The holdout predictions were not provided.")
    pairs = [
        (float(p), float(t))
        for p, t in zip(holdout.predicted, holdout.truth, strict=False)
        if _finite(p) and _finite(t)
    ]
    if not pairs:
        return _note("The holdout has no finite prediction to plot.")
    shown = pairs[:: max(1, math.ceil(len(pairs) / MAX_POINTS))]
    lo = min(min(p, t) for p, t in pairs)
    hi = max(max(p, t) for p, t in pairs)
    series = [
        _Series("line", [(lo, lo), (hi, hi)], PALETTE["reference"], width=1.5, dashed=True),
        _Series("points", shown, PALETTE["point"], radius=3.0, opacity=0.7),
    ]
    span = _span([lo, hi])
    chart = _plot(
        series,
        width=460,
        height=400,
        xlabel="predicted",
        ylabel="actual",
        label="predicted against actual",
        x_range=span,
        y_range=span,
    )
    residuals = [t - p for p, t in pairs]
    mean = sum(residuals) / len(residuals)
    largest = max(residuals, key=abs)
    sampled = f" ({len(shown)} of them shown)" if len(shown) < len(pairs) else ""
    caption = (
        f"{len(pairs)} holdout rows{sampled}; mean residual (actual &minus; predicted) "
        f"{_e(format_value(mean))}, largest {_e(format_value(largest))}. Points on the dashed diagonal are exact."
    )
    legend = _legend([("point", "holdout row"), ("reference", "predicted = actual")])
    return f"<figure>{chart}{legend}<figcaption>{caption}</figcaption></figure>"


def _counterfactuals(explained: dict[str, Any], regression: bool) -> str:
    examples = [e for e in explained.get("examples") or [] if isinstance(e, dict)]
    if not examples:
        return _note(_skipped(explained, "examples", "No counterfactual examples"))
    rows = []
    for example in examples:
        found = _dict(example.get("counterfactual"))
        local = _dict(example.get("explanation"))
        decision = found.get("decision", local.get("decision"))
        changes = [c for c in found.get("changes") or [] if isinstance(c, dict)]
        if found.get("flipsTo") is not None and changes:
            listed = "<br>".join(
                f"<code>{_e(c.get('feature'))}</code>: {_e(_value(c.get('from')))} &rarr; "
                f"{_e(_value(c.get('to')))}"
                for c in changes
            )
        else:
            listed = f'<span class="note">{_e(found.get("reason") or "none found")}</span>'
        top = [c for c in local.get("contributions") or [] if isinstance(c, dict)][:3]
        drivers = "<br>".join(
            f"<code>{_e(c.get('feature'))}</code> = {_e(_value(c.get('value')))} "
            f"({float(c['contribution']):+.3f})"
            for c in top
            if _finite(c.get("contribution"))
        )
        immutable = ", ".join(f"<code>{_e(f)}</code>" for f in found.get("immutable") or [])
        rows.append(
            [
                _num_cell(example.get("row")),
                _e(_decided(decision, regression)),
                _e(_decided(found.get("flipsTo"), regression)),
                listed,
                drivers,
                immutable,
            ]
        )
    header = [
        "holdout row",
        "decision",
        "becomes",
        "changes",
        "top SHAP contributions",
        "never changed",
    ]
    return _table(header, rows) + _note(
        "The fewest single-column changes (greedy) that flip each example's decision; the "
        "columns the spec marks immutable are never changed."
    )


def _skipped(explained: dict[str, Any], part: str, what: str) -> str:
    if part in (explained.get("skipped") or []):
        return f"{what}: skipped, the explanation budget ran out."
    if not explained:
        return f"{what}: no explanations were provided."
    return f"{what}: none was recorded."


def _direction(card: dict[str, Any], evaluation: dict[str, Any]) -> str:
    objective = str(_dict(card.get("training")).get("objective") or "")
    if objective.startswith(("maximize_", "minimize_")):
        return objective.partition("_")[0]
    metric = evaluation.get("primaryMetric")
    return direction_of(str(metric)) if metric else "maximize"


# --- SVG ---------------------------------------------------------------------------------------


@dataclass
class _Series:
    kind: str  # "line", "step" (a line held flat between points) or "points"
    points: list[tuple[float, float]]
    color: str
    width: float = 2.0  # a line's stroke width
    opacity: float = 1.0
    radius: float = 3.0  # a point's
    dashed: bool = False


_MARGIN = {"left": 60, "right": 14, "top": 12, "bottom": 44}


def _plot(
    series: Sequence[_Series],
    *,
    width: int,
    height: int,
    xlabel: str,
    ylabel: str,
    label: str,
    categories: Sequence[str] | None = None,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    integer_x: bool = False,
) -> str:
    """An x-y plot: axes with ticks, then each series (lines, steps, points) in order."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    if categories is not None:
        x_lo, x_hi = -0.5, len(categories) - 0.5
    else:
        x_lo, x_hi = x_range or _span(xs)
    y_lo, y_hi = y_range or _span(ys)
    left, top = _MARGIN["left"], _MARGIN["top"]
    inner_w = width - left - _MARGIN["right"]
    inner_h = height - top - (_MARGIN["bottom"] + (36 if _turned(categories) else 0))

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * inner_w

    def py(y: float) -> float:
        return top + (1.0 - (y - y_lo) / (y_hi - y_lo)) * inner_h

    parts = [
        _axes(
            px, py, (x_lo, x_hi), (y_lo, y_hi), left, top, inner_w, inner_h, categories, integer_x
        )
    ]
    for s in series:
        parts.append(_marks(s, px, py))
    parts.append(
        f'<text x="{left + inner_w / 2:.1f}" y="{height - 6}" text-anchor="middle" '
        f'class="axis-label">{_e(_short(xlabel, 60))}</text>'
    )
    parts.append(
        f'<text transform="translate(14 {top + inner_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle" class="axis-label">{_e(_short(ylabel, 48))}</text>'
    )
    return _svg(width, height, label, "".join(parts))


def _turned(categories: Sequence[str] | None) -> bool:
    """Whether category labels are drawn slanted: many of them, or long ones."""
    if categories is None:
        return False
    return len(categories) > 5 or max((len(c) for c in categories), default=0) > 8


def _axes(
    px: Callable[[float], float],
    py: Callable[[float], float],
    x_span: tuple[float, float],
    y_span: tuple[float, float],
    left: float,
    top: float,
    inner_w: float,
    inner_h: float,
    categories: Sequence[str] | None,
    integer_x: bool,
) -> str:
    bottom, right = top + inner_h, left + inner_w
    axis = PALETTE["axis"]
    parts = [
        f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" fill="#ffffff" '
        'stroke="#dee2e6"/>'
    ]
    for y in _ticks(*y_span):
        parts.append(
            f'<line x1="{left}" x2="{right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#f1f3f5"/>'
            f'<text x="{left - 5}" y="{py(y) + 4:.1f}" text-anchor="end">{_e(_tick(y))}</text>'
        )
    if categories is not None:
        turn = _turned(categories)
        for i, name in enumerate(categories):
            x = px(float(i))
            text = _e(_short(name, 14))
            if turn:
                parts.append(
                    f'<text transform="translate({x:.1f} {bottom + 12}) rotate(-25)" '
                    f'text-anchor="end">{text}<title>{_e(name)}</title></text>'
                )
            else:
                parts.append(
                    f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{text}</text>'
                )
    else:
        ticks = _ticks(*x_span)
        if integer_x:
            ticks = [t for t in ticks if float(t).is_integer()] or ticks
        for x in ticks:
            parts.append(
                f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{bottom}" y2="{bottom + 4}" '
                f'stroke="{axis}"/><text x="{px(x):.1f}" y="{bottom + 16}" '
                f'text-anchor="middle">{_e(_tick(x))}</text>'
            )
    parts.append(
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{axis}"/>'
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{bottom}" stroke="{axis}"/>'
    )
    return "".join(parts)


def _marks(s: _Series, px: Callable[[float], float], py: Callable[[float], float]) -> str:
    opacity = f' opacity="{s.opacity:g}"' if s.opacity < 1.0 else ""
    if s.kind == "points":
        return "".join(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{s.radius:g}" fill="{s.color}"'
            f"{opacity}/>"
            for x, y in s.points
        )
    points = list(s.points)
    if s.kind == "step":
        held: list[tuple[float, float]] = []
        for x, y in points:
            if held and held[-1][1] != y:
                held.append((x, held[-1][1]))
            held.append((x, y))
        points = held
    if len(points) < 2:
        return ""
    coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    return (
        f'<polyline points="{coords}" fill="none" stroke="{s.color}" '
        f'stroke-width="{s.width:g}" stroke-linejoin="round"{dash}{opacity}/>'
    )


def _bars(items: Sequence[tuple[str, float, float | None]], *, label: str, value_label: str) -> str:
    """Horizontal bars, one per (name, value, whisker), in the order given; negative values
    grow left of the zero line."""
    row, name_w, width = 22, 190, 720
    left, right = name_w + 10, width - 70
    values = [v for _, v, _ in items] + [v + (w or 0.0) for _, v, w in items]
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    if hi == lo:
        hi = lo + 1.0

    def px(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    height = 30 + row * len(items) + 30
    parts = []
    for i, (name, value, whisker) in enumerate(items):
        y = 20 + i * row
        x0, x1 = sorted((px(0.0), px(value)))
        parts.append(
            f'<text x="{name_w}" y="{y + 14}" text-anchor="end">{_e(_short(name, 28))}'
            f"<title>{_e(name)}</title></text>"
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 1.0):.1f}" height="{row - 6}" '
            f'fill="{PALETTE["bar"]}"/>'
        )
        if whisker:
            a, b = px(value - whisker), px(value + whisker)
            parts.append(
                f'<line x1="{a:.1f}" x2="{b:.1f}" y1="{y + row / 2:.1f}" y2="{y + row / 2:.1f}" '
                f'stroke="{PALETTE["axis"]}" stroke-width="1.5"/>'
            )
        parts.append(
            f'<text x="{max(x1, px(value + (whisker or 0.0))) + 5:.1f}" y="{y + 14}">'
            f"{_e(_tick(value))}</text>"
        )
    bottom = 20 + row * len(items)
    parts.append(
        f'<line x1="{px(0.0):.1f}" x2="{px(0.0):.1f}" y1="16" y2="{bottom + 4}" '
        f'stroke="{PALETTE["reference"]}"/>'
        f'<text x="{(left + right) / 2:.1f}" y="{bottom + 22}" text-anchor="middle" '
        f'class="axis-label">{_e(value_label)}</text>'
    )
    return _svg(width, height, label, "".join(parts))


def _legend(entries: Iterable[tuple[str, str]]) -> str:
    """A line of swatches (SVG, so they print) and their labels (already escaped)."""
    items = []
    for kind, text in entries:
        if kind in ("line", "reference", "line-thin"):
            color = PALETTE["reference" if kind == "reference" else "line"]
            extra = {"reference": ' stroke-dasharray="4 3"', "line-thin": ' opacity="0.35"'}
            stroke = 1.5 if kind == "line-thin" else 2.5
            mark = (
                f'<line x1="1" x2="17" y1="6" y2="6" stroke="{color}" '
                f'stroke-width="{stroke}"{extra.get(kind, "")}/>'
            )
        else:
            mark = f'<circle cx="9" cy="6" r="4" fill="{PALETTE[kind]}"/>'
        items.append(
            f'<span class="key"><svg width="18" height="12" aria-hidden="true">{mark}</svg>'
            f"{text}</span>"
        )
    return f'<div class="legend">{"".join(items)}</div>'


def _svg(width: int, height: int, label: str, body: str) -> str:
    return (
        f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>{body}</svg>'
    )


def _span(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    finite = [v for v in values if _finite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi == lo:
        half = abs(lo) * 0.1 or 0.5
        return lo - half, hi + half
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) inside [lo, hi]."""
    span = hi - lo
    if not (span > 0 and math.isfinite(span)):
        return [lo]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def _tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4g}"


def _pairs(xs: Sequence[float], ys: Sequence[Any]) -> list[tuple[float, float]]:
    return [(x, float(y)) for x, y in zip(xs, ys, strict=False) if _finite(y)]


def _shade(share: float) -> str:
    r, g, b = (int(PALETTE["cell"][i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{0.08 + 0.5 * max(0.0, min(1.0, share)):.2f})"


# --- HTML --------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#212529;
background:#f1f3f5;line-height:1.45}
main{max-width:1060px;margin:0 auto;padding:20px 32px 48px;background:#fff}
h1{font-size:1.6em;margin:.2em 0 .4em}
h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #dee2e6;padding-bottom:.2em}
h3{font-size:1em;margin:1em 0 .3em}
nav a{margin-right:14px;color:#343a40;font-size:.92em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.92em}
th,td{border:1px solid #dee2e6;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f8f9fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.over{background:#ffe3e3;color:#c92a2a;font-weight:700}
td.cm{min-width:64px;text-align:center}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;
background:#f1f3f5;padding:.05em .3em;border-radius:3px;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 18px}
dt{font-weight:600}dd{margin:0}
.note{color:#6c757d}
.good{color:#2b8a3e;font-weight:600}.bad{color:#c92a2a;font-weight:600}
figure{margin:.5em 0 1em}
figcaption{font-size:.85em;color:#6c757d;max-width:720px}
.grid{display:flex;flex-wrap:wrap;gap:8px 16px}
.grid figure{margin:0}
.legend{font-size:.85em;color:#495057;margin:2px 0 4px}
.key{margin-right:16px;white-space:nowrap}
.key svg{vertical-align:middle;margin-right:4px}
svg.plot{display:block;overflow:visible}
svg.plot text{font-size:11px;fill:#495057}
svg.plot text.axis-label{font-size:12px;fill:#212529}
""".strip()


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    """A definition list; labels are escaped here, values come escaped."""
    items = "".join(f"<dt>{_e(label)}</dt><dd>{value}</dd>" for label, value in facts)
    return f"<dl>{items}</dl>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table: header names are escaped here; cells come as HTML (a `<td ...>` cell as is,
    else wrapped in <td>)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num_cell(value: Any, extra: str = "") -> str:
    cls = f"num {extra}".strip()
    return f'<td class="{cls}">{_e(format_value(value))}</td>'


def _note(html_text: str) -> str:
    return f'<p class="note">{html_text}</p>'


# --- values ------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escaped text of any value (None: empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _finite(value: Any) -> TypeGuard[float]:
    """A finite real number (numpy's too), not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(float(value))


def _value(value: Any) -> str:
    """A data value as the tables show it: floats to 4 significant digits."""
    if value is None:
        return "—"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return _category(value)


def _decided(value: Any, regression: bool) -> str:
    """A decision as the tables show it: a regression's value (recorded as text) rounded."""
    if regression and isinstance(value, str):
        try:
            return _value(float(value))
        except ValueError:
            pass
    return _value(value)


def _category(value: Any) -> str:
    text = "missing" if value is None else str(value)
    return "(empty)" if text == "" else text


def _short(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _trial_point(trial: Sequence[Any]) -> TrialPoint:
    number, value, state = trial[0], trial[1], trial[2]
    state = getattr(state, "name", state)
    return int(number), (float(value) if value is not None else None), str(state).upper()


__all__ = ["FAIRNESS_LIMIT", "PALETTE", "History", "Holdout", "load_history", "render_report"]
