"""The model card as people read it: Markdown and a self-contained HTML page from one JSON."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

from aiml024.runtime.card import build_card, missing_sections, render_html, render_markdown


def card(**evaluation: Any) -> dict[str, Any]:
    built = build_card(
        name="churn-model",
        task="classification",
        target="churned",
        owner="retention",
        data={"uri": "s3://data/churn.csv", "rows": 1000, "fingerprint": "f" * 64,
              "trainRows": 800, "holdoutRows": 200, "classes": ["no", "yes"]},
        training={"objective": "maximize_auc", "sampler": "tpe", "trials": "20 of 20",
                  "learners": ["lightgbm", "xgboost"], "folds": 5, "seed": 42,
                  "chosen": "ensemble", "members": ["lightgbm#3", "xgboost#7"]},
        leaderboard=[
            {"rank": 1, "name": "ensemble", "value": 0.91, "members": ["lightgbm#3", "xgboost#7"],
             "weights": [0.75, 0.25]},
            {"rank": 2, "name": "lightgbm", "value": 0.9, "trial": 3},
        ],
        evaluation={"metrics": {"auc": 0.905, "accuracy": 0.85},
                    "baselineMetrics": {"auc": 0.88, "accuracy": 0.84}, "primaryMetric": "auc",
                    "threshold": 0.42, **evaluation},
        pii={"columns": {"email": "email"}, "action": "mask"},
        limitations=["Trained on 800 rows of s3://data/churn.csv."],
    )  # fmt: skip
    built["lineage"] = {
        "datasetUri": "s3://data/churn.csv",
        "datasetFingerprint": "f" * 64,
        "specHash": "5" * 64,
        "codeVersion": "0.1.0",
        "experiment": "churn",
        "workflow": "churn-g1",
        "trial": 3,
        "seed": 42,
        "model": "churn-model",
        "sha256": "b" * 64,
    }
    return built


FAIRNESS = {
    "figures": {
        "sex.demographic_parity_difference": 0.0812,
        "sex.equalized_odds_difference": 0.1234,
    },
    "groups": {
        "sex": [
            {"group": "F", "count": 97, "selection_rate": 0.31},
            {"group": "M", "count": 103, "selection_rate": 0.3912},
        ]
    },
}
CALIBRATION = {"brier": 0.1021, "ece": 0.0312}


def section(markdown: str, title: str) -> str:
    """The body of one `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no section {title!r} in:\n{markdown}"
    return match.group(1).strip()


def test_markdown_covers_every_section_of_the_card() -> None:
    markdown = render_markdown(card(calibration=CALIBRATION, fairness=FAIRNESS))
    assert markdown.startswith("# Model card: churn-model\n\nCard complete: **yes**\n")
    titles = re.findall(r"^## (.+)$", markdown, re.M)
    assert titles == [
        "Intended use", "Owner", "Data", "Training procedure", "Leaderboard (cross-validated)",
        "Holdout evaluation", "Calibration", "Fairness", "Personal data", "Limitations",
        "Lineage",
    ]  # fmt: skip
    assert "Predict `churned` (classification)" in section(markdown, "Intended use")
    assert "- Fingerprint (sha256): " + "f" * 64 in section(markdown, "Data")
    assert "| 1 | ensemble | 0.9100 |  | lightgbm#3 (0.75), xgboost#7 (0.25) |" in markdown
    evaluation = section(markdown, "Holdout evaluation")
    assert "decision threshold 0.4200" in evaluation
    assert "| auc | 0.9050 | 0.8800 |" in evaluation
    assert section(markdown, "Calibration") == (
        "- Brier score: 0.1021\n- Expected calibration error (ECE): 0.0312"
    )
    fairness = section(markdown, "Fairness")
    assert "| `sex.demographic_parity_difference` | 0.0812 |" in fairness
    assert "| `sex.equalized_odds_difference` | 0.1234 |" in fairness
    assert "Groups of `sex`:\n\n| group | count | selection_rate |" in fairness
    assert "| M | 103 | 0.3912 |" in fairness
    assert "`email` (email)" in section(markdown, "Personal data")
    lineage = section(markdown, "Lineage")
    assert "- Experiment spec (sha256): " + "5" * 64 in lineage
    assert "- Bundle (sha256): " + "b" * 64 in lineage
    assert "- Code version: 0.1.0" in lineage and "- Workflow: churn-g1" in lineage


def test_sections_without_figures_say_so() -> None:
    text = card()
    del text["lineage"]
    markdown = render_markdown(text)
    assert section(markdown, "Fairness") == (
        "_not measured: spec.fairness.sensitiveAttributes names no attribute_"
    )
    assert section(markdown, "Calibration").startswith("_not measured")
    assert section(markdown, "Lineage") == "_recorded when the model is registered_"


def test_regression_fairness_shows_the_groups_without_parity_figures() -> None:
    groups = {"age": [{"group": "(18, 30]", "count": 50, "mae": 1.25}]}
    fairness = section(
        render_markdown(card(fairness={"figures": {}, "groups": groups})), "Fairness"
    )
    assert "no parity figures" in fairness and "| figure | value |" not in fairness
    assert "Groups of `age`:\n\n| group | count | mae |\n| --- | --- | --- |\n" in fairness
    assert "| (18, 30] | 50 | 1.2500 |" in fairness


def test_a_card_missing_sections_still_renders_and_is_incomplete() -> None:
    """A card from an older step, or a broken one: both renderings name what is absent."""
    partial = {"model": "m", "complete": False, "missing": missing_sections({})}
    markdown = render_markdown(partial)
    assert "Card complete: **no** (missing: intendedUse, owner, data" in markdown
    assert section(markdown, "Limitations") == "_not recorded_"
    page = render_html(partial)
    assert '<p class="incomplete">Card complete: <strong>no</strong> (missing:' in page


class _Page(HTMLParser):
    """What a browser would see: the text per section, and every element that loads something."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.loads: list[str] = []
        self._section: str | None = None
        self._in_script = False
        self.script = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "section":
            self._section = names["id"]
            self.sections[self._section or ""] = ""
        if tag == "script":
            self._in_script = True
            if "src" in names or names.get("type") != "application/json":
                self.loads.append(f"<{tag} {names}>")
        if tag in ("link", "img", "iframe", "object", "embed") or "src" in names:
            self.loads.append(f"<{tag} {names}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script += data
        elif self._section:
            self.sections[self._section] += data


def test_html_is_self_contained_and_shows_what_the_json_holds() -> None:
    text = card(calibration=CALIBRATION, fairness=FAIRNESS)
    page = render_html(text)
    parsed = _Page()
    parsed.feed(page)
    assert parsed.loads == []  # no script, stylesheet, font or image from anywhere
    assert "<style>" in page and "url(" not in page and "@import" not in page
    assert list(parsed.sections) == [
        "intended-use", "owner", "data", "training-procedure", "leaderboard-cross-validated",
        "holdout-evaluation", "calibration", "fairness", "personal-data", "limitations",
        "lineage",
    ]  # fmt: skip
    assert "Brier score0.1021" in parsed.sections["calibration"]
    assert "sex.demographic_parity_difference0.0812" in parsed.sections["fairness"]
    assert "M1030.3912" in parsed.sections["fairness"]
    assert "auc0.90500.8800" in parsed.sections["holdout-evaluation"]
    assert "Code version0.1.0" in parsed.sections["lineage"]
    assert "b" * 64 in parsed.sections["lineage"]
    # The card's JSON travels with the page, exactly.
    assert json.loads(parsed.script) == text


def test_html_escapes_what_the_card_holds() -> None:
    """Card text comes from data and specs: it can never become markup or end the JSON."""
    text = card()
    text["limitations"] = ["<script>alert('x')</script> & </script><b>bold</b>"]
    text["owner"] = '<img src="https://evil.example/x.png">'
    page = render_html(text)
    parsed = _Page()
    parsed.feed(page)
    assert parsed.loads == []
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;/script&gt;" in page
    assert parsed.sections["owner"].split() == [
        "Owner",
        "<img",
        'src="https://evil.example/x.png">',
    ]
    assert json.loads(parsed.script) == text
