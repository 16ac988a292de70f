"""Personal data: find columns that hold it, and mask or drop them before training and serving.

Detection looks at values (emails, phone numbers, payment cards with a Luhn check, US social
security numbers) and at column names (person names cannot be told from values reliably). A
free-text column whose values only contain such things ("call me at 415-555-0134") is kind
`text`: masking replaces each one inside the text with its token and keeps the words.
PiiMasker is a scikit-learn transformer so that the served pipeline applies the same masking to
every request; masking is idempotent, so it may run on already-masked training data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

PiiKind = Literal["email", "phone", "card", "ssn", "name", "text"]
PiiAction = Literal["mask", "drop"]

MATCH_SHARE = 0.3  # a column is PII when this share of its sampled non-missing values match

EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+'-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})$")
# E.164 (+14155550134) and the usual national layouts: (415) 555-0134, 415-555-0134,
# 415.555.0134, +44 20 7946 0958. The digit count (7..15) is checked separately.
PHONE_RE = re.compile(
    r"^(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{1,5}){1,4}$"
)
_PHONE_SEPARATED = re.compile(r"^\+|[\s().-]")
_NOT_PHONE = re.compile(
    r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$"  # ISO dates
    r"|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$"  # national dates
    r"|^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$"  # IPv4 addresses
    r"|^\d+\.\d+$"  # decimals
)
CARD_RE = re.compile(r"^\d(?:[ -]?\d){12,18}$")
SSN_RE = re.compile(r"^(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}$")

# Column names that hold person names, after normalisation to lower snake case.
NAME_COLUMNS = frozenset(
    {
        "name",
        "first_name",
        "last_name",
        "full_name",
        "middle_name",
        "given_name",
        "family_name",
        "surname",
        "firstname",
        "lastname",
        "fullname",
        "maiden_name",
        "customer_name",
        "client_name",
        "contact_name",
        "person_name",
        "user_name",
        "username",
        "account_holder",
        "account_holder_name",
        "cardholder",
        "cardholder_name",
        "card_holder_name",
        "employee_name",
        "patient_name",
        "owner_name",
        "member_name",
        "subscriber_name",
        "recipient_name",
        "sender_name",
        "billing_name",
        "shipping_name",
    }
)
TOKENS: dict[str, str] = {
    "email": "<email>",
    "phone": "<phone>",
    "card": "<card>",
    "ssn": "<ssn>",
    "name": "<name>",
}
# PII inside free text: the same kinds, found anywhere in a value (not the whole value).
_IN_TEXT: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")),
    ("ssn", re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")),
    ("card", re.compile(r"(?<![\w-])[2-6]\d{3}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?![\w-])")),
    (
        "phone",
        re.compile(
            r"(?<![\w-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}[\s.-]\d{2,4}"
            r"(?:[\s.-]\d{2,5}){0,2}(?![\w-])"
        ),
    ),
)
_DATE_START = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}")
# A text column counts as holding PII when this many of its sampled values carry some.
TEXT_MATCHES = 3
TEXT_SHARE = 0.005


def normalise_name(column: str) -> str:
    """firstName, First Name, first-name -> first_name."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(column))
    return re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies (and 1 in 10 random ones)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_email(value: str) -> bool:
    return EMAIL_RE.match(value) is not None


def is_phone(value: str) -> bool:
    if not PHONE_RE.match(value) or _NOT_PHONE.match(value):
        return False
    digits = sum(c.isdigit() for c in value)
    # A bare run of digits is an account number as often as a phone number: require a
    # leading + (E.164) or the separators people write phone numbers with.
    return 7 <= digits <= 15 and _PHONE_SEPARATED.search(value) is not None


def is_card(value: str) -> bool:
    if not CARD_RE.match(value):
        return False
    digits = re.sub(r"\D", "", value)
    # Issuer prefixes 2-6 (Mastercard, Amex/Diners/JCB, Visa, Mastercard, Discover/UnionPay)
    # and the Luhn check together keep random digit strings out.
    return digits[0] in "23456" and luhn_valid(digits)


def is_ssn(value: str) -> bool:
    return SSN_RE.match(value) is not None


# Checked in this order: a card with dashes must not count as a phone number.
_VALUE_CHECKS: tuple[tuple[PiiKind, Callable[[str], bool]], ...] = (
    ("email", is_email),
    ("card", is_card),
    ("ssn", is_ssn),
    ("phone", is_phone),
)


def _as_text(values: pd.Series) -> pd.Series:
    """Values as stripped strings; integral floats lose their '.0' (cards read from CSV)."""
    if pd.api.types.is_float_dtype(values.dtype):
        if not np.all(np.mod(values.to_numpy(), 1) == 0):
            return pd.Series([], dtype=object)
        values = values.astype("int64")
    return values.astype(str).str.strip()


def value_kind(values: pd.Series, share: float = MATCH_SHARE) -> PiiKind | None:
    """The PII kind most of these non-missing values match, if at least `share` of them do."""
    if values.empty or pd.api.types.is_bool_dtype(values.dtype):
        return None
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return None
    text = _as_text(values)
    if text.empty:
        return None
    best: tuple[float, PiiKind | None] = (0.0, None)
    for kind, check in _VALUE_CHECKS:
        matched = float(text.map(check).mean())
        if matched >= share and matched > best[0]:
            best = (matched, kind)
    return best[1]


def detect_pii(
    df: pd.DataFrame, sample: int = 2000, exclude: tuple[str, ...] = ()
) -> dict[str, PiiKind]:
    """Columns that hold PII, with their kind (email, phone, card, ssn, name).

    A column is PII when at least 30% of up to `sample` non-missing values match a pattern, or
    when its name says it holds person names. The sample is seeded, so results are stable.
    """
    found: dict[str, PiiKind] = {}
    for column in df.columns:
        key = str(column)
        if key in exclude:
            continue
        values = df[column].dropna()
        if len(values) > sample:
            values = values.sample(sample, random_state=0)
        kind = value_kind(values)
        if kind is None and _holds_pii_in_text(values):
            kind = "text"
        if kind is None and normalise_name(key) in NAME_COLUMNS:
            if not pd.api.types.is_numeric_dtype(df[column].dtype):
                kind = "name"
        if kind is not None:
            found[key] = kind
    return found


def _in_text(match: re.Match[str], kind: str) -> bool:
    found = match.group(0)
    if kind == "card":
        return luhn_valid(re.sub(r"\D", "", found))
    if kind == "phone":
        if _DATE_START.match(found) or match.string[match.end() : match.end() + 1] == ":":
            return False  # a date, or a date and time
        return 7 <= sum(c.isdigit() for c in found) <= 15 and not _NOT_PHONE.match(found)
    return True


def scrub_text(text: str) -> str:
    """`text` with each email, SSN, card and phone number in it replaced by its token."""
    for kind, pattern in _IN_TEXT:
        text = pattern.sub(lambda m, k=kind: TOKENS[k] if _in_text(m, k) else m.group(0), text)
    return text


def _holds_pii_in_text(values: pd.Series) -> bool:
    """Whether enough of these values are words with PII among them (free text, not codes,
    dates or numbers: a value without a word of two letters is not looked into)."""
    if not (pd.api.types.is_object_dtype(values.dtype) or pd.api.types.is_string_dtype(values)):
        return False
    text = values.astype(str)
    text = text[text.str.contains(r"[A-Za-z]{2,}", regex=True)]
    carrying = int((text.map(scrub_text) != text).sum())
    return carrying >= max(TEXT_MATCHES, TEXT_SHARE * len(text))


def mask_values(values: pd.Series, kind: str) -> pd.Series:
    """Replace PII with a stable token; missing stays missing.

    Emails keep their lower-cased domain (`<email>@gmail.com`): the provider is a legitimate
    category, the mailbox is not. Masking a masked value returns it unchanged.
    """
    present = values.notna()
    if kind == "text":  # keep the words, mask what is inside them
        scrubbed = values[present].astype(str).map(scrub_text)
        return pd.Series(scrubbed, index=values.index, dtype=object).where(present, None)
    out = pd.Series(TOKENS.get(kind, "<pii>"), index=values.index, dtype=object)
    out = out.where(present, None)
    if kind == "email":
        domain = values[present].astype(str).str.extract(r"@([^@\s]+)\s*$", expand=False)
        has_domain = domain.notna()
        out.loc[domain.index[has_domain]] = "<email>@" + domain[has_domain].str.lower()
    return out


def mask_frame(df: pd.DataFrame, columns: Mapping[str, str], action: str) -> pd.DataFrame:
    """A copy of df with the PII columns masked or dropped; absent columns are skipped."""
    if action not in ("mask", "drop"):
        raise ValueError(f"PII action must be mask or drop, got {action!r}")
    present = [c for c in columns if c in df.columns]
    if action == "drop":
        return df.drop(columns=present)
    out = df.copy()
    for column in present:
        out[column] = mask_values(df[column], columns[column])
    return out


def __getattr__(name: str) -> Any:
    """PiiMasker is built on first use: validate masks frames without loading scikit-learn."""
    if name == "PiiMasker":
        masker = _define_masker()
        globals()["PiiMasker"] = masker
        return masker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_masker() -> type:
    from sklearn.base import BaseEstimator, TransformerMixin

    class PiiMasker(TransformerMixin, BaseEstimator):
        """Masks (or drops) PII columns of a DataFrame; stateless, picklable, idempotent.

        Put it first in the served pipeline so requests are masked exactly like the training data.
        Columns the frame lacks are skipped, so a request may omit them.
        """

        def __init__(self, columns: dict[str, str] | None = None, action: PiiAction = "mask"):
            self.columns = columns
            self.action = action

        def fit(self, X: pd.DataFrame, y: object = None) -> PiiMasker:
            if self.action not in ("mask", "drop"):
                raise ValueError(f"PiiMasker action must be mask or drop, got {self.action!r}")
            if isinstance(X, pd.DataFrame):
                self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
                self.n_features_in_ = len(X.columns)
            return self

        def transform(self, X: pd.DataFrame) -> pd.DataFrame:
            if not isinstance(X, pd.DataFrame):
                raise TypeError(f"PiiMasker needs a pandas DataFrame, got {type(X).__name__}")
            return mask_frame(X, dict(self.columns or {}), self.action)

        def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> np.ndarray:
            names = (
                list(input_features)
                if input_features is not None
                else list(getattr(self, "feature_names_in_", []))
            )
            if self.action == "drop":
                names = [n for n in names if n not in (self.columns or {})]
            return np.asarray(names, dtype=object)

    PiiMasker.__qualname__ = "PiiMasker"  # pickles name aiml024.runtime.pii.PiiMasker
    return PiiMasker
