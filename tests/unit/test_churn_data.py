"""The churn example's data: regenerated identically by its script, and shaped as documented."""

from __future__ import annotations

import importlib.util
import io

import pandas as pd
import pytest
from tests.conftest import EXAMPLES

SCRIPT = EXAMPLES / "churn" / "make_data.py"
DATA = EXAMPLES / "churn" / "data" / "churn.csv.gz"
COLUMNS = [
    "customer_id",
    "signup_date",
    "last_active",
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "support_calls_90d",
    "data_usage_gb",
    "contract",
    "payment_method",
    "internet_service",
    "region",
    "senior",
    "num_products",
    "email",
    "phone",
    "last_message",
    "churned",
]


@pytest.fixture(scope="module")
def checked_in() -> pd.DataFrame:
    return pd.read_csv(DATA)


def _load_script():
    spec = importlib.util.spec_from_file_location("churn_make_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_regenerates_the_checked_in_file(checked_in):
    generated = _load_script().make_churn()
    # Through CSV text, as the file was written, so float formatting and dtypes match.
    round_trip = pd.read_csv(io.StringIO(generated.to_csv(index=False)))
    pd.testing.assert_frame_equal(round_trip, checked_in)


def test_data_has_the_documented_shape(checked_in):
    assert len(checked_in) >= 20_000
    assert list(checked_in.columns) == COLUMNS
    assert checked_in["customer_id"].is_unique
    assert 0.20 <= checked_in["churned"].mean() <= 0.27
    assert set(checked_in["churned"].unique()) == {0, 1}
    assert 30 <= checked_in["region"].nunique() <= 50
    assert set(checked_in["contract"]) == {"month-to-month", "one-year", "two-year"}
    for column in ("total_charges", "data_usage_gb", "payment_method"):
        assert 0.01 <= checked_in[column].isna().mean() <= 0.05, column


def test_data_file_stays_small():
    assert DATA.stat().st_size < 2.5e6
