"""The model card: what the model is for, what it learned from, how well it does, its limits.

`build_card` gathers the facts into one JSON document (model_card.json); `render_markdown` and
`render_html` write the same document for people (model_card.md, and a self-contained HTML page
with no external resource: inline style, the card's JSON embedded). The card is `complete` when
every required section holds its facts; policies can require that. Both renderings show what the
JSON holds and say so where a section is absent (a card from an older step, a regression with no
calibration, no sensitive attributes): they never fail on a missing section.

The register step adds the run's `lineage` to the card, renders it, and signs it: the statement
(`CardStatement`) names every file of the published `card/` directory with its sha256, the
bundle's digest, the model and the run; `signature.json` (`SignedCard`) holds the statement, the
signing key's fingerprint (sha256 of its raw Ed25519 public key), the public key and the Ed25519
signature of `statement_bytes` (a domain line, then canonical JSON). Ed25519 signatures are
deterministic, so a retried register step writes the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field

from aiml024.api.common import GROUP, Strict
from aiml024.signing import decode_public_key, encode_public_key, public_key_bytes

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

CARD_JSON: Final = "model_card.json"
CARD_MARKDOWN: Final = "model_card.md"
CARD_HTML: Final = "model_card.html"
CARD_FILES: Final = (CARD_JSON, CARD_MARKDOWN, CARD_HTML)  # every signed card has all three
SIGNATURE_FILE: Final = "signature.json"

CARD_DOMAIN: Final = f"{GROUP}/model-card/v1"  # the signed bytes start with this line
# The signing key: a PEM file (a mounted Secret in a cluster). Unset on one machine: the key at
# LOCAL_CARD_KEY under the local state directory, created on first use (mode 0600).
CARD_KEY_ENV: Final = "AIML024_CARD_KEY_FILE"
LOCAL_CARD_KEY: Final = ("keys", "model-card.pem")

_SHA256 = r"^[0-9a-f]{64}$"


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


# --- the card's content, once, for both renderings ---------------------------------------------
#
# A section is (title, blocks); a block is ("p", text), ("facts", [(label, value)]),
# ("list", [text]) or ("table", caption, header, rows). Text may hold `code`, **bold** and
# _emphasis_, which Markdown keeps and HTML turns into elements.

Block = tuple[Any, ...]
Section = tuple[str, list[Block]]


def _sections(card: Mapping[str, Any]) -> list[Section]:
    evaluation = _dict(card.get("evaluation"))
    limitations = [str(item) for item in card.get("limitations") or []]
    return [
        ("Intended use", [("p", card.get("intendedUse") or _NOT_RECORDED)]),
        ("Owner", [("p", card.get("owner") or _NO_OWNER)]),
        ("Data", [("facts", _data_facts(card))]),
        ("Training procedure", [("facts", _training_facts(_dict(card.get("training"))))]),
        ("Leaderboard (cross-validated)", [_leaderboard_table(card)]),
        ("Holdout evaluation", _evaluation_blocks(evaluation)),
        ("Calibration", _calibration_blocks(card, evaluation)),
        ("Fairness", _fairness_blocks(card, evaluation)),
        ("Personal data", [("p", _pii_text(_dict(card.get("pii"))))]),
        ("Limitations", [("list", limitations)] if limitations else [("p", _NOT_RECORDED)]),
        ("Lineage", _lineage_blocks(card)),
    ]


_NO_OWNER = "_not set: add an `owner` or `team` label to spec.model.labels_"


def _data_facts(card: Mapping[str, Any]) -> list[tuple[str, Any]]:
    data = _dict(card.get("data"))
    return [
        ("Source", data.get("uri")),
        ("Rows", data.get("rows")),
        ("Fingerprint (sha256)", data.get("fingerprint")),
        ("Target", f"`{card['target']}`" if card.get("target") else None),
        ("Search rows", data.get("trainRows")),
        ("Holdout rows", data.get("holdoutRows")),
        ("Classes", data.get("classes")),
    ]


def _training_facts(training: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("Objective", training.get("objective")),
        ("Search", training.get("sampler")),
        ("Trials", training.get("trials")),
        ("Time budget (s)", training.get("timeBudgetSeconds")),
        ("Learners", training.get("learners")),
        ("Cross-validation folds", training.get("folds")),
        ("Seed", training.get("seed")),
        ("Chosen model", training.get("chosen")),
        ("Members", training.get("members")),
    ]


def _leaderboard_table(card: Mapping[str, Any]) -> Block:
    rows = [
        [row.get("rank"), row.get("name"), row.get("value"), row.get("trial"), _weighted(row)]
        for row in card.get("leaderboard") or []
        if isinstance(row, dict)
    ]
    return ("table", None, ["rank", "model", "value", "trial", "members"], rows)


def _evaluation_blocks(evaluation: Mapping[str, Any]) -> list[Block]:
    baseline = _dict(evaluation.get("baselineMetrics"))
    threshold = evaluation.get("threshold")
    summary = (
        f"Primary metric: `{evaluation.get('primaryMetric')}`; decision threshold "
        f"{format_value(0.5 if threshold is None else float(threshold))}. Baseline: default LightGBM on "
        "the same features and rows."
    )
    rows = [[m, v, baseline.get(m)] for m, v in _dict(evaluation.get("metrics")).items()]
    return [("p", summary), ("table", None, ["metric", "model", "baseline"], rows)]


_NOT_RECORDED = "_not recorded_"
_CALIBRATION_LABELS = {
    "brier": "Brier score",
    "ece": "Expected calibration error (ECE)",
}


def _calibration_blocks(card: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[Block]:
    figures = _dict(card.get("calibration")) or _dict(evaluation.get("calibration"))
    if not figures:
        return [("p", "_not measured: calibration applies to classification probabilities_")]
    facts: list[tuple[str, Any]] = []
    if evaluation.get("calibrationMethod") is not None:
        facts.append(("Calibration method", evaluation["calibrationMethod"]))
    facts += [(_CALIBRATION_LABELS.get(k, k), v) for k, v in figures.items() if _scalar(v)]
    if evaluation.get("thresholdRule") is not None:
        facts.append(("Threshold rule", evaluation["thresholdRule"]))
    tables = [("table", f"`{key}`", *_table(rows)) for key, rows in figures.items() if _rows(rows)]
    return [("facts", facts), *tables]


def _fairness_blocks(card: Mapping[str, Any], evaluation: Mapping[str, Any]) -> list[Block]:
    """evaluate's `{figures: {<attribute>.<figure>: value}, groups: {<attribute>: [rows]}}`;
    any other shape shows its numbers as figures and its lists of rows as group tables."""
    fairness = _dict(card.get("fairness")) or _dict(evaluation.get("fairness"))
    figures = _dict(fairness.get("figures", {k: v for k, v in fairness.items() if _scalar(v)}))
    groups = _dict(fairness.get("groups", {k: v for k, v in fairness.items() if _rows(v)}))
    if not figures and not groups:
        return [("p", "_not measured: spec.fairness.sensitiveAttributes names no attribute_")]
    blocks: list[Block] = [("p", _FAIRNESS_TEXT if figures else _FAIRNESS_GROUPS_ONLY)]
    if figures:
        rows = [[f"`{name}`", value] for name, value in figures.items()]
        blocks.append(("table", None, ["figure", "value"], rows))
    blocks += [
        ("table", f"Groups of `{attribute}`", *_table(rows))
        for attribute, rows in groups.items()
        if _rows(rows)
    ]
    return blocks


_FAIRNESS_TEXT = (
    "Measured on the holdout, per sensitive attribute: the largest gap between its groups in "
    "selection rate (demographic parity difference) and in true- or false-positive rate "
    "(equalized odds difference)."
)
_FAIRNESS_GROUPS_ONLY = (
    "Measured on the holdout, per group of each sensitive attribute (no parity figures: the "
    "model makes no decisions to compare)."
)


_LINEAGE_LABELS = (
    ("datasetUri", "Dataset"),
    ("datasetFingerprint", "Dataset fingerprint (sha256)"),
    ("specHash", "Experiment spec (sha256)"),
    ("codeVersion", "Code version"),
    ("experiment", "Experiment"),
    ("workflow", "Workflow"),
    ("trial", "Best trial"),
    ("seed", "Seed"),
    ("model", "Model"),
    ("sha256", "Bundle (sha256)"),
)


def _lineage_blocks(card: Mapping[str, Any]) -> list[Block]:
    lineage = _dict(card.get("lineage"))
    if not lineage:
        return [("p", "_recorded when the model is registered_")]
    known = {key for key, _ in _LINEAGE_LABELS}
    facts = [(label, lineage.get(key)) for key, label in _LINEAGE_LABELS]
    return [("facts", facts + [(k, v) for k, v in lineage.items() if k not in known])]


# --- Markdown ----------------------------------------------------------------------------------


def render_markdown(card: Mapping[str, Any]) -> str:
    lines = [f"# Model card: {card.get('model')}", "", _complete_line(card), ""]
    for title, blocks in _sections(card):
        lines += [f"## {title}", ""]
        for block in blocks:
            lines += [*_markdown_block(block), ""]
    return "\n".join(lines)


def _markdown_block(block: Block) -> list[str]:
    kind = block[0]
    if kind == "p":
        return [str(block[1])]
    if kind == "facts":
        return [f"- {label}: {format_value(value)}" for label, value in block[1] if _shown(value)]
    if kind == "list":
        return [f"- {item}" for item in block[1]]
    _, caption, header, rows = block
    cells = [[_md_cell(c) for c in row] for row in rows]
    return [
        *([f"{caption}:", ""] if caption else []),
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in cells),
    ]


def _md_cell(value: Any) -> str:
    return format_value(value).replace("|", "\\|").replace("\n", " ")


# --- HTML --------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa;line-height:1.5}
main{max-width:960px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:1.7em;border-bottom:1px solid #d0d7de;padding-bottom:.3em}
h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #eaeef2;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;
background:#eff1f3;padding:.1em .3em;border-radius:4px;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px}
dt{font-weight:600}dd{margin:0;word-break:break-all}
.complete{color:#1a7f37}.incomplete{color:#cf222e}
caption{text-align:left;font-weight:600;padding-bottom:4px}
""".strip()


def render_html(card: Mapping[str, Any]) -> str:
    """The card as one self-contained HTML page: inline style, no script or font from anywhere,
    and the card's JSON embedded (`<script type="application/json" id="model-card">`)."""
    title = f"Model card: {card.get('model')}"
    complete = bool(card.get("complete"))
    parts = [
        *page_head(title, _STYLE),
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="{"complete" if complete else "incomplete"}">{_inline(_complete_line(card))}'
        "</p>",
    ]
    for title_, blocks in _sections(card):
        anchor = re.sub(r"[^a-z0-9]+", "-", title_.lower()).strip("-")
        parts += [f'<section id="{anchor}">', f"<h2>{html.escape(title_)}</h2>"]
        parts += [_html_block(block) for block in blocks]
        parts.append("</section>")
    embedded = json.dumps(card, sort_keys=True, indent=1, ensure_ascii=True)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        embedded = embedded.replace(char, escaped)  # cannot close the script element
    parts += [
        f'<script type="application/json" id="model-card">\n{embedded}\n</script>',
        "</main>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def _html_block(block: Block) -> str:
    kind = block[0]
    if kind == "p":
        return f"<p>{_inline(str(block[1]))}</p>"
    if kind == "facts":
        items = "".join(
            f"<dt>{_inline(str(label))}</dt><dd>{_inline(format_value(value))}</dd>"
            for label, value in block[1]
            if _shown(value)
        )
        return f"<dl>{items}</dl>"
    if kind == "list":
        return "<ul>" + "".join(f"<li>{_inline(str(i))}</li>" for i in block[1]) + "</ul>"
    _, caption, header, rows = block
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_inline(format_value(c))}</td>'
            if _number(c)
            else f"<td>{_inline(format_value(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    cap = f"<caption>{_inline(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    """Escape `text`, then turn its `code`, **bold** and _emphasis_ into elements (nothing
    inside a code span is read as markup)."""
    if len(text) > 2 and text.startswith("_") and text.endswith("_"):
        return f"<em>{_inline(text[1:-1])}</em>"
    parts = []
    for index, part in enumerate(re.split(r"`([^`]+)`", text)):
        escaped = html.escape(part)
        if index % 2:
            parts.append(f"<code>{escaped}</code>")
            continue
        escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
        parts.append(re.sub(r"(?<!\w)_([^_]+)_(?!\w)", r"<em>\1</em>", escaped))
    return "".join(parts)


# --- helpers -------------------------------------------------------------------------------------


def _complete_line(card: Mapping[str, Any]) -> str:
    missing = card.get("missing") or []
    return f"Card complete: **{'yes' if card.get('complete') else 'no'}**" + (
        f" (missing: {', '.join(map(str, missing))})" if missing else ""
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    header: list[str] = []
    for row in rows:
        header += [str(k) for k in row if str(k) not in header]
    return header, [[row.get(h) for h in header] for row in rows]


def _shown(value: Any) -> bool:
    return value not in (None, "", [], {})


def page_head(title: str, style: str) -> list[str]:
    """The opening of a self-contained HTML page, up to its open <main>: inline style only."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{style}\n</style>",
        "</head>",
        "<body>",
        "<main>",
    ]


def format_value(value: Any) -> str:
    """A fact as people read it: yes/no, 4 decimals, lists and maps joined."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4f}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    return str(value)


def _weighted(row: Mapping[str, Any]) -> list[str]:
    weights = row.get("weights") or []
    members = row.get("members") or []
    if len(weights) != len(members):
        return [str(m) for m in members]
    return [f"{m} ({w:.2f})" for m, w in zip(members, weights, strict=True)]


def _pii_text(pii: Mapping[str, Any]) -> str:
    if pii.get("action") == "unscanned":
        return "The data was not scanned for personal data (spec.pii.scan is off)."
    columns = pii.get("columns") or {}
    if not columns:
        return "No column was found to hold personal data."
    listed = ", ".join(f"`{c}` ({kind})" for c, kind in sorted(columns.items()))
    how = "masked with fixed tokens" if pii.get("action") == "mask" else "dropped"
    return (
        f"Columns holding personal data: {listed}. They were {how} before training, and the "
        "served pipeline applies the same handling to every request."
    )


# --- the signature -----------------------------------------------------------------------------


class CardRun(Strict):
    """The run that registered the model: its root in the artifact store is
    `{store}/{namespace}/{experiment}/{experimentUid}/{workflow}`."""

    namespace: str
    experiment: str
    experiment_uid: str
    workflow: str


class CardStatement(Strict):
    """What the register step signs: these card files, this bundle, this model, this run."""

    model: str
    run: CardRun
    bundle_sha256: str = Field(pattern=_SHA256)
    card: dict[str, str] = Field(description="Every file of card/ but signature.json -> sha256.")

    def canonical_bytes(self) -> bytes:
        return statement_bytes(self)


class SignedCard(Strict):
    """signature.json: the statement, the key's fingerprint and public half, the signature."""

    statement: CardStatement
    key_fingerprint: str = Field(pattern=_SHA256)
    public_key: str = Field(description="The raw Ed25519 public key, base64.")
    signature: str = Field(description="Ed25519 over statement_bytes(statement), base64.")

    def public(self) -> Ed25519PublicKey:
        return decode_public_key(self.public_key)


def statement_bytes(statement: CardStatement) -> bytes:
    """The exact bytes signed: a domain line, then canonical JSON (sorted keys, no spaces,
    ASCII only), so the signature cannot mean anything else."""
    body = json.dumps(statement.wire(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{CARD_DOMAIN}\n{body}".encode("ascii")


def file_digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def key_fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """sha256 (hex) of the raw public key: what a Model records as cardSignature.keyFingerprint."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(public_key_bytes(public)).hexdigest()


def sign_card(statement: CardStatement, private_key: Ed25519PrivateKey) -> SignedCard:
    public = private_key.public_key()
    return SignedCard(
        statement=statement,
        key_fingerprint=key_fingerprint(public),
        public_key=encode_public_key(public),
        signature=base64.b64encode(private_key.sign(statement_bytes(statement))).decode("ascii"),
    )


def signature_file_bytes(signed: SignedCard) -> bytes:
    return (json.dumps(signed.wire(), sort_keys=True, indent=1) + "\n").encode()


def signature_valid(signed: SignedCard, public_key: Ed25519PublicKey) -> bool:
    """Whether `signed.signature` is `public_key`'s Ed25519 signature of its statement."""
    try:
        raw = base64.b64decode(signed.signature, validate=True)
        public_key.verify(raw, statement_bytes(signed.statement))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
