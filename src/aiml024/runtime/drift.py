"""Drift statistics: the training reference profile a bundle carries, and how far logged
requests have moved from it.

The evaluate step writes `profile.json` (a `ReferenceProfile`) into the bundle directory, so
the bundle's sha256 covers it and it travels with the Model. Per input column of the bundle,
typed as served (`Bundle.frame`):

- numeric: bin edges from the training deciles (deduplicated; bin i is (edge[i-1], edge[i]],
  the first from -inf, the last to +inf), the training share of each bin plus a missing bin,
  and a seeded sample of at most SAMPLE_SIZE values for the KS test;
- categorical and boolean: the shares of the TOP_LEVELS most frequent levels, of every other
  level (OTHER) and of missing values (MISSING); booleans are the levels `true` / `false`;
- datetime and text: skipped (`ReferenceProfile.skipped` says why).

The predictions (the served model's `score` on the holdout) are profiled as a numeric column.

`compare(profile, typed_frame, scores, method, threshold, ...)` scores each feature against its
reference: PSI over the bins (EPSILON for empty bins), the KS D statistic against the
reference sample (numeric only; categorical columns use the chi-square test's Cramér's V
instead, on the same 0..1 scale), and a chi-square test of homogeneity over the binned or level
counts (reference counts vs logged counts; its score is 1 - p-value). `method` decides which one is the feature's score, compared with the
threshold (`score > threshold` is drift).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from scipy import stats

from aiml024.api.monitoring import PREDICTION, FeatureDrift

from .bundle import BundleMeta

PROFILE_FILE = "profile.json"
PROFILE_VERSION = 1
DECILES = 10
SAMPLE_SIZE = 2_000
TOP_LEVELS = 50
OTHER = "__other__"
MISSING = "__missing__"
EPSILON = 1e-4  # the share an empty bin counts as in PSI (ln(0) is undefined)

Method = Literal["psi", "ks", "chi2"]


class NumericProfile(BaseModel):
    kind: Literal["numeric"] = "numeric"
    name: str
    rows: int
    edges: list[float] = Field(description="Inner bin edges; len(edges) + 1 value bins.")
    proportions: list[float] = Field(description="Share of each value bin, then missing.")
    sample: list[float] = Field(default_factory=list, description="Seeded sample for KS.")

    def counts(self, values: pd.Series) -> np.ndarray:
        """Logged values' count per bin (value bins, then missing)."""
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        present = numeric[~np.isnan(numeric)]
        bins = np.searchsorted(np.asarray(self.edges, dtype=float), present, side="left")
        counted = np.bincount(bins, minlength=len(self.edges) + 1).astype(float)
        return np.append(counted, float(len(numeric) - len(present)))


class CategoricalProfile(BaseModel):
    kind: Literal["categorical"] = "categorical"
    name: str
    rows: int
    boolean: bool = False
    levels: list[str] = Field(description="The most frequent levels (at most TOP_LEVELS).")
    proportions: list[float] = Field(description="Share of each level, then OTHER, then MISSING.")

    def counts(self, values: pd.Series) -> np.ndarray:
        """Logged values' count per level, then OTHER (unseen levels too), then MISSING."""
        keys = _level_keys(values, self.boolean)
        index = {level: i for i, level in enumerate(self.levels)}
        counted = np.zeros(len(self.levels) + 2)
        for key in keys:
            if key is None:
                counted[-1] += 1
            else:
                counted[index.get(key, len(self.levels))] += 1
        return counted


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceProfile(BaseModel):
    """The training distribution of a bundle's inputs and of its predictions on the holdout."""

    version: int = PROFILE_VERSION
    rows: int = Field(description="Training rows profiled.")
    seed: int
    features: list[FeatureProfile] = Field(default_factory=list)
    skipped: dict[str, str] = Field(
        default_factory=dict, description="Input column -> why it is not profiled."
    )
    prediction: NumericProfile | None = Field(
        default=None, description="The served `score` on the holdout."
    )

    def feature(self, name: str) -> NumericProfile | CategoricalProfile | None:
        return next((f for f in self.features if f.name == name), None)


# --- building ---------------------------------------------------------------------------------


def _level_keys(values: pd.Series, boolean: bool) -> list[str | None]:
    """Each value as its level key (None: missing); booleans as `true` / `false`."""
    out: list[str | None] = []
    for value in values.tolist():
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            out.append(None)
        elif boolean:
            out.append("true" if bool(value) else "false")
        else:
            out.append(str(value))
    return out


def numeric_profile(name: str, values: pd.Series, rng: np.random.Generator) -> NumericProfile:
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    present = numeric[~np.isnan(numeric)]
    if len(present):
        # Edges are observed values (no interpolation): discrete columns keep their levels.
        inner = np.quantile(present, np.arange(1, DECILES) / DECILES, method="lower")
        edges = [float(e) for e in np.unique(inner)]
    else:
        edges = []
    profile = NumericProfile(name=name, rows=len(numeric), edges=edges, proportions=[])
    counts = profile.counts(values)
    profile.proportions = [float(c) for c in counts / max(1, len(numeric))]
    if len(present) > SAMPLE_SIZE:
        present = rng.choice(present, size=SAMPLE_SIZE, replace=False)
    profile.sample = [float(v) for v in np.sort(present)]
    return profile


def categorical_profile(name: str, values: pd.Series, boolean: bool) -> CategoricalProfile:
    keys = _level_keys(values, boolean)
    seen = pd.Series([k for k in keys if k is not None], dtype=object)
    frequent = seen.value_counts(sort=True) if len(seen) else pd.Series(dtype=int)
    # Most frequent first, ties by name: the same data gives the same profile.
    ordered = sorted(frequent.items(), key=lambda item: (-int(item[1]), str(item[0])))
    levels = [str(level) for level, _ in ordered[:TOP_LEVELS]]
    profile = CategoricalProfile(
        name=name, rows=len(keys), boolean=boolean, levels=levels, proportions=[]
    )
    counts = profile.counts(values)
    profile.proportions = [float(c) for c in counts / max(1, len(keys))]
    return profile


def build_profile(
    typed_frame: pd.DataFrame,
    scores: np.ndarray | pd.Series | None,
    seed: int,
    meta: BundleMeta | None = None,
) -> ReferenceProfile:
    """The reference profile of `typed_frame` (training rows, typed by `Bundle.frame`) and of
    the served model's holdout `scores`. Column kinds come from `meta` when given (the
    bundle's input columns), else from the frame's dtypes (numbers are numeric)."""
    rng = np.random.default_rng(seed)
    kinds = {c.name: c.dtype for c in meta.columns} if meta is not None else {}
    profile = ReferenceProfile(rows=len(typed_frame), seed=seed)
    for name in typed_frame.columns:
        column = typed_frame[name]
        kind = kinds.get(name) or (
            "numeric" if pd.api.types.is_numeric_dtype(column) else "categorical"
        )
        if kind in ("datetime", "text"):
            profile.skipped[name] = f"{kind} columns are not profiled for drift"
        elif kind == "numeric":
            profile.features.append(numeric_profile(name, column, rng))
        else:
            profile.features.append(categorical_profile(name, column, kind == "boolean"))
    if scores is not None:
        score_series = pd.Series(np.asarray(scores, dtype=float))
        profile.prediction = numeric_profile(PREDICTION, score_series, rng)
    return profile


# --- comparing --------------------------------------------------------------------------------


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two share vectors (empty bins count as EPSILON)."""
    p = np.clip(np.asarray(reference, dtype=float), EPSILON, None)
    q = np.clip(np.asarray(current, dtype=float), EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


def chi2_test(
    reference_counts: np.ndarray, current_counts: np.ndarray
) -> tuple[float, float, float]:
    """Chi-square test of homogeneity (reference sample vs logged rows) over the bins either
    one uses: (statistic, p-value, Cramér's V = sqrt(statistic / rows), 0..1). One bin in use:
    no difference to find, p = 1."""
    table = np.vstack([reference_counts, current_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0.0
    statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return float(statistic), float(p_value), float(np.sqrt(statistic / table.sum()))


def ks_test(sample: list[float], values: np.ndarray) -> tuple[float, float] | None:
    """Two-sample KS (D, p-value) of the logged values against the reference sample; None
    when either side has no values."""
    present = values[~np.isnan(values)]
    if not sample or not len(present):
        return None
    result = stats.ks_2samp(np.asarray(sample, dtype=float), present)
    return float(result.statistic), float(result.pvalue)


def feature_drift(
    profile: NumericProfile | CategoricalProfile,
    values: pd.Series,
    method: Method,
    threshold: float,
    kind: Literal["numeric", "categorical", "prediction"] | None = None,
) -> FeatureDrift:
    """One feature's drift under `method`: psi; ks (D, 0..1; for categorical columns, and when
    no value is present to compare, the chi-square test's Cramér's V, also 0..1, so that one
    threshold means the same effect size); or chi2 (1 - p-value)."""
    reference = np.asarray(profile.proportions, dtype=float)
    counts = profile.counts(values)
    total = counts.sum()
    _, chi_p, cramers_v = chi2_test(np.round(reference * profile.rows), counts)
    statistic: Method
    if method == "psi":
        statistic, score, p_value = "psi", psi(reference, counts / max(1.0, total)), chi_p
    elif method == "ks":
        numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        tested = ks_test(profile.sample, numeric) if isinstance(profile, NumericProfile) else None
        if tested is None:
            statistic, score, p_value = "chi2", cramers_v, chi_p
        else:
            statistic, (score, p_value) = "ks", tested
    else:
        statistic, score, p_value = "chi2", 1.0 - chi_p, chi_p
    return FeatureDrift(
        feature=profile.name,
        kind=kind or profile.kind,
        statistic=statistic,
        score=round(float(score), 6),
        p_value=None if p_value is None else round(float(p_value), 6),
        drifted=bool(score > threshold),
    )


def compare(
    profile: ReferenceProfile,
    typed_frame: pd.DataFrame,
    scores: np.ndarray | pd.Series | None,
    method: Method,
    threshold: float,
    features: list[str] | None = None,
) -> list[FeatureDrift]:
    """Every watched feature's drift (all profiled columns when `features` is empty; names
    that are not profiled are left out: `unwatched` says which), then the predictions'."""
    names = features or [f.name for f in profile.features]
    out = []
    for name in names:
        reference = profile.feature(name)
        if reference is None or name not in typed_frame:
            continue
        out.append(feature_drift(reference, typed_frame[name], method, threshold))
    if profile.prediction is not None and scores is not None:
        series = pd.Series(np.asarray(scores, dtype=float))
        out.append(feature_drift(profile.prediction, series, method, threshold, "prediction"))
    return out


def unwatched(profile: ReferenceProfile, features: list[str]) -> list[str]:
    """The names in `features` the profile cannot compare (skipped or unknown)."""
    return [name for name in features if profile.feature(name) is None]


def as_json(profile: ReferenceProfile) -> dict[str, Any]:
    return profile.model_dump(mode="json")


def write_profile(bundle_dir: Path, profile: ReferenceProfile) -> Path:
    """`<bundle_dir>/profile.json`, before the bundle's digest is taken (it covers the file)."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    path = bundle_dir / PROFILE_FILE
    path.write_text(json.dumps(as_json(profile), sort_keys=True, separators=(",", ":")) + "\n")
    return path


def read_profile(bundle_dir: Path) -> ReferenceProfile | None:
    """The bundle's reference profile; None for a bundle trained before profiles existed."""
    path = bundle_dir / PROFILE_FILE
    if not path.exists():
        return None
    return ReferenceProfile.model_validate_json(path.read_text())
