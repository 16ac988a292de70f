"""PII: which columns are found, how they are masked, and that the masker can be served."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from tests.conftest import EXAMPLES

from aiml024.runtime.data import read_table
from aiml024.runtime.pii import PiiMasker, detect_pii, is_card, is_phone, luhn_valid, mask_frame

# Published test numbers of the card networks (Visa, Mastercard, Amex, Discover, JCB).
CARDS = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "4012888888881881",
    "5105105105105100",
    "371449635398431",
]


def luhn_cards(n: int, seed: int = 0) -> list[str]:
    """n Luhn-valid 16-digit numbers with a Visa prefix."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        body = "4" + "".join(map(str, rng.integers(0, 10, 14)))
        check = next(d for d in "0123456789" if luhn_valid(body + d))
        out.append(body + check)
    return out


class TestDetection:
    def test_emails(self):
        df = pd.DataFrame({"contact": ["ana@example.com", "bo.li+x@mail.co.uk", None, "n/a"] * 10})
        assert detect_pii(df) == {"contact": "email"}

    @pytest.mark.parametrize(
        "phone",
        [
            "+14155550134",
            "+1 415-555-0134",
            "(415) 555-0134",
            "415-555-0134",
            "415.555.0134",
            "+44 20 7946 0958",
            "+49 30 901820",
        ],
    )
    def test_phone_formats(self, phone):
        assert is_phone(phone)
        assert detect_pii(pd.DataFrame({"x": [phone] * 20})) == {"x": "phone"}

    @pytest.mark.parametrize(
        "value", ["2024-01-31", "12/31/2024", "192.168.1.10", "3.14159", "4155550134", "42"]
    )
    def test_dates_addresses_and_bare_numbers_are_not_phones(self, value):
        assert not is_phone(value)

    def test_luhn_valid_cards(self):
        assert all(is_card(c) for c in CARDS)
        assert is_card("4111 1111 1111 1111") and is_card("4111-1111-1111-1111")
        df = pd.DataFrame({"card": luhn_cards(200), "spaced": ["4111 1111 1111 1111"] * 200})
        assert detect_pii(df) == {"card": "card", "spaced": "card"}

    def test_random_16_digit_numbers_are_not_cards(self):
        rng = np.random.default_rng(7)
        numbers = ["".join(map(str, rng.integers(0, 10, 16))) for _ in range(3000)]
        assert detect_pii(pd.DataFrame({"account_no": numbers})) == {}
        assert not is_card("4111111111111112")  # one digit off a valid card

    def test_cards_read_from_csv_as_integers(self):
        df = pd.DataFrame({"cc": [int(c) for c in luhn_cards(50)]})
        assert df["cc"].dtype == np.int64
        assert detect_pii(df) == {"cc": "card"}

    def test_ssn(self):
        assert detect_pii(pd.DataFrame({"x": ["123-45-6789", "078-05-1120"] * 10})) == {"x": "ssn"}

    def test_name_columns_by_their_names(self):
        df = pd.DataFrame(
            {
                "Full Name": ["Ana Li"] * 5,
                "firstName": ["Ana"] * 5,
                "last_name": ["Li"] * 5,
                "customer_name": ["Ana Li"] * 5,
                "product_name": ["Fiber 1G"] * 5,
                "plan": ["basic"] * 5,
            }
        )
        assert detect_pii(df) == {
            "Full Name": "name",
            "firstName": "name",
            "last_name": "name",
            "customer_name": "name",
        }

    def test_a_few_matches_do_not_make_an_email_column_but_are_still_masked(self):
        """10% emails is not an email column (30%); it is free text carrying PII, masked in place."""
        values = ["ana@example.com"] + [f"plain text {i}" for i in range(9)]
        assert detect_pii(pd.DataFrame({"notes": values * 10})) == {"notes": "text"}

    def test_excluded_columns_are_skipped(self):
        df = pd.DataFrame({"email": ["a@b.io"] * 5, "id": ["c@d.io"] * 5})
        assert detect_pii(df, exclude=("id",)) == {"email": "email"}

    def test_churn_data(self):
        churn = read_table(str(EXAMPLES / "churn" / "data" / "churn.csv.gz"))
        assert detect_pii(churn) == {"email": "email", "phone": "phone"}


@pytest.fixture
def people() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "email": ["Ana@Gmail.com", "bo@yahoo.com", None],
            "phone": ["+14155550134", None, "(212) 555-0199"],
            "card": ["4111111111111111", "5555555555554444", None],
            "name": ["Ana", "Bo", "Cy"],
            "plan": ["basic", "pro", "pro"],
        }
    )


PII = {"email": "email", "phone": "phone", "card": "card", "name": "name"}


class TestMasking:
    def test_mask_keeps_email_domains_and_tokens_the_rest(self, people):
        masked = PiiMasker(PII, "mask").fit_transform(people)
        assert masked["email"].tolist()[:2] == ["<email>@gmail.com", "<email>@yahoo.com"]
        assert pd.isna(masked["email"].iloc[2])
        assert masked["phone"].iloc[0] == "<phone>" and pd.isna(masked["phone"].iloc[1])
        assert masked["card"].tolist()[:2] == ["<card>", "<card>"]
        assert set(masked["name"]) == {"<name>"}
        assert masked["plan"].tolist() == people["plan"].tolist()
        assert people["email"].iloc[0] == "Ana@Gmail.com"  # the input is left alone

    def test_masking_is_idempotent(self, people):
        once = mask_frame(people, PII, "mask")
        pd.testing.assert_frame_equal(mask_frame(once, PII, "mask"), once)

    def test_drop_removes_the_columns(self, people):
        masker = PiiMasker(PII, "drop").fit(people)
        assert list(masker.transform(people).columns) == ["plan"]
        assert list(masker.get_feature_names_out()) == ["plan"]

    def test_requests_may_omit_pii_columns(self, people):
        masked = PiiMasker(PII).fit(people).transform(people[["email", "plan"]])
        assert list(masked.columns) == ["email", "plan"]

    def test_unknown_action_is_refused(self, people):
        with pytest.raises(ValueError, match="mask or drop"):
            PiiMasker(PII, "hide").fit(people)

    def test_masker_pickles_and_clones_inside_a_pipeline(self, people):
        pipeline = Pipeline([("pii", PiiMasker(PII, "mask")), ("identity", FunctionTransformer())])
        pipeline.fit(people)
        restored = pickle.loads(pickle.dumps(pipeline.named_steps["pii"]))
        pd.testing.assert_frame_equal(
            restored.transform(people), pipeline.named_steps["pii"].transform(people)
        )
        assert clone(restored).get_params() == {"columns": PII, "action": "mask"}


class TestFreeText:
    """PII inside free text: a message column keeps its words; what is personal is masked."""

    MESSAGES = [
        "please call me at 415-555-0134 about my bill",
        "my email is jo.doe@example.com, cancel now",
        "card 4111 1111 1111 1111 was charged twice",
        "the price went up again since 2025-06-25 00:44",
        "great service, thanks",
    ]

    def test_a_message_column_carrying_pii_is_kind_text(self) -> None:
        df = pd.DataFrame({"message": self.MESSAGES * 10, "order": ["A-12345 shipped"] * 50})
        assert detect_pii(df) == {"message": "text"}

    def test_masking_keeps_the_words_and_is_idempotent(self) -> None:
        masked = mask_frame(pd.DataFrame({"message": self.MESSAGES + [None]}),
                            {"message": "text"}, "mask")["message"]  # fmt: skip
        assert masked.tolist() == [
            "please call me at <phone> about my bill",
            "my email is <email>, cancel now",
            "card <card> was charged twice",
            "the price went up again since 2025-06-25 00:44",
            "great service, thanks",
            None,
        ]
        again = mask_frame(pd.DataFrame({"message": masked}), {"message": "text"}, "mask")
        assert again["message"].tolist() == masked.tolist()

    def test_a_few_stray_numbers_do_not_make_a_column_pii(self) -> None:
        text = ["order 12345 arrived", "plan costs 70.50", "since 2024-05-01"] * 30
        text[0] = "call 415-555-0134"  # one message among 90: below the share
        assert detect_pii(pd.DataFrame({"message": text})) == {}

    def test_the_served_pipeline_masks_requests_the_same_way(self) -> None:
        masker = PiiMasker(columns={"message": "text"}, action="mask").fit(
            pd.DataFrame({"message": ["x"]})
        )
        request = pd.DataFrame({"message": ["reach me on +44 20 7946 0958 tonight"]})
        assert masker.transform(request)["message"].tolist() == ["reach me on <phone> tonight"]
