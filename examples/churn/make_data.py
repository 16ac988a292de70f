"""Generate the synthetic telecom churn dataset used by the churn example.

    python examples/churn/make_data.py          # writes examples/churn/data/churn.csv.gz

Deterministic: one seeded numpy Generator drives every draw, and the gzip header carries no
timestamp, so running it again reproduces the checked-in file.

The label comes from a nonlinear logistic model, so a model has to earn its score:
- interactions: month-to-month x short tenure, fiber x high charges, senior x electronic check;
- thresholds: support calls above two, low data usage, inactivity beyond a month;
- recency: days since `last_active` (only visible once the datetime is parsed);
- a region effect over ~40 regions (high cardinality, uneven frequencies);
- the wording of `last_message` (cancel intent, price and outage complaints, praise), whose
  topic depends on the same latent propensity but also adds its own effect;
- unobserved noise, so the best achievable AUC stays below ~0.9.
`email` and `phone` are PII; the email's domain alone is a legitimate (weak) feature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20240607
N_ROWS = 24_000
SNAPSHOT = pd.Timestamp("2025-06-30 23:59:00")
TARGET_POSITIVE_RATE = 0.24
OUT = Path(__file__).resolve().parent / "data" / "churn.csv.gz"

REGIONS = [
    "atlanta",
    "austin",
    "baltimore",
    "birmingham",
    "boise",
    "boston",
    "charlotte",
    "chicago",
    "cincinnati",
    "cleveland",
    "columbus",
    "dallas",
    "denver",
    "detroit",
    "el-paso",
    "fresno",
    "houston",
    "indianapolis",
    "jacksonville",
    "kansas-city",
    "las-vegas",
    "los-angeles",
    "louisville",
    "memphis",
    "miami",
    "milwaukee",
    "minneapolis",
    "nashville",
    "new-orleans",
    "new-york",
    "oklahoma-city",
    "omaha",
    "philadelphia",
    "phoenix",
    "portland",
    "raleigh",
    "sacramento",
    "san-diego",
    "seattle",
    "tucson",
]
FIRST_NAMES = [
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "carlos",
    "karen",
    "daniel",
    "lisa",
    "matthew",
    "nancy",
    "anthony",
    "betty",
    "mark",
    "sandra",
    "priya",
    "ashley",
    "wei",
    "emily",
    "ahmed",
    "olivia",
    "luis",
    "sofia",
    "kenji",
    "fatima",
    "noah",
    "grace",
]
LAST_NAMES = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "nguyen",
    "hill",
    "flores",
    "patel",
]
EMAIL_DOMAINS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
    "comcast.net",
    "proton.me",
]
EMAIL_DOMAIN_P = [0.42, 0.14, 0.12, 0.09, 0.10, 0.05, 0.05, 0.03]
COMPETITORS = ["fastnet", "skywave", "metrolink", "cheaper provider", "another carrier"]

# Message topics and how each shifts the churn logit beyond the structured features.
TOPICS = ["none", "neutral", "happy", "price", "outage", "cancel"]
TOPIC_EFFECT = np.array([0.0, 0.0, -0.9, 0.6, 0.5, 1.7])
MESSAGES = {
    "neutral": [
        "how do i set up voicemail on my new phone",
        "can i add another line to my account",
        "please update my billing address",
        "what are the roaming rates for canada",
        "need help configuring the router settings",
        "can i get a copy of last month's invoice",
        "how do i change my payment method",
        "is there a family plan option",
        "when is my next payment due",
        "can you send me the wifi setup guide",
    ],
    "happy": [
        "thanks for the quick fix yesterday",
        "great service, the technician was very helpful",
        "really happy with the new speeds",
        "love the new plan, thank you",
        "support resolved my issue fast, appreciate it",
        "the upgrade went smoothly, thanks",
        "excellent coverage since the last update",
        "very satisfied with the service so far",
    ],
    "price": [
        "my bill went up again this month",
        "why am i paying {amount} a month for this",
        "found a cheaper plan with {competitor}",
        "the price is too high for what i get",
        "charges keep increasing every month",
        "can you lower my monthly rate",
        "this is too expensive, any discounts available",
        "i was overcharged on my last bill",
    ],
    "outage": [
        "internet has been down {n} times this week",
        "constant outages in {region}, this is unacceptable",
        "connection drops every evening",
        "service was out all weekend again",
        "very slow speeds and frequent dropouts",
        "no signal at home for {n} days",
        "the network keeps failing during calls",
    ],
    "cancel": [
        "i want to cancel my contract",
        "how do i close my account",
        "please cancel my service at the end of the month",
        "thinking about switching to {competitor}",
        "what is the early termination fee",
        "i am leaving, please send the cancellation form",
        "port my number out, i am done",
    ],
}
PREFIXES = ["", "", "", "hi, ", "hello, ", "hey ", "good morning, "]
SUFFIXES = ["", "", "", ".", "!", " thanks", " asap", "?"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row from row-wise probabilities (vectorised inverse CDF)."""
    u = rng.random(len(probs))[:, None]
    return np.minimum((u > probs.cumsum(axis=1)).sum(axis=1), probs.shape[1] - 1)


def _phones(rng: np.random.Generator, n: int) -> list[str]:
    """US numbers in the formats people actually type (E.164, dashes, dots, parentheses)."""
    area = rng.integers(201, 990, n)
    exchange = rng.integers(200, 1000, n)
    line = rng.integers(0, 10_000, n)
    style = rng.integers(0, 5, n)
    out = []
    for a, e, ln, s in zip(area, exchange, line, style, strict=True):
        out.append(
            (
                f"+1{a}{e}{ln:04d}",
                f"+1 {a}-{e}-{ln:04d}",
                f"({a}) {e}-{ln:04d}",
                f"{a}-{e}-{ln:04d}",
                f"{a}.{e}.{ln:04d}",
            )[s]
        )
    return out


def _messages(rng, topics, monthly, region) -> list[object]:
    picks = rng.random(len(topics))
    prefix = rng.integers(0, len(PREFIXES), len(topics))
    suffix = rng.integers(0, len(SUFFIXES), len(topics))
    competitor = rng.integers(0, len(COMPETITORS), len(topics))
    count = rng.integers(2, 6, len(topics))
    out: list[object] = []
    for i, topic in enumerate(topics):
        name = TOPICS[topic]
        if name == "none":
            out.append(None)
            continue
        templates = MESSAGES[name]
        text = templates[int(picks[i] * len(templates))].format(
            amount=f"${monthly[i]:.0f}",
            competitor=COMPETITORS[competitor[i]],
            n=count[i],
            region=region[i].replace("-", " "),
        )
        out.append(PREFIXES[prefix[i]] + text + SUFFIXES[suffix[i]])
    return out


def make_churn(n_rows: int = N_ROWS, seed: int = SEED) -> pd.DataFrame:
    """The churn table, one row per customer; identical for the same n_rows and seed."""
    rng = np.random.default_rng(seed)
    n = n_rows

    contract = rng.choice(["month-to-month", "one-year", "two-year"], n, p=[0.52, 0.24, 0.24])
    m2m = contract == "month-to-month"
    two_year = contract == "two-year"
    # Longer contracts go with longer tenure.
    tenure = np.clip(np.round(rng.gamma(1.3 + 1.4 * (~m2m) + 1.0 * two_year, 10.0)), 1, 72).astype(
        int
    )
    internet = rng.choice(["fiber", "dsl", "none"], n, p=[0.45, 0.38, 0.17])
    fiber = internet == "fiber"
    num_products = np.clip(rng.poisson(1.2, n) + 1, 1, 5)
    base_price = np.select([fiber, internet == "dsl"], [70.0, 48.0], 22.0)
    monthly = np.round(
        base_price + 9.5 * (num_products - 1) + rng.normal(0, 8.0, n).clip(-20, 25), 2
    ).clip(18.25, 125.0)
    total = np.round(monthly * tenure * rng.uniform(0.93, 1.04, n), 2)
    senior = rng.random(n) < 0.16
    payment = rng.choice(
        ["electronic check", "mailed check", "bank transfer", "credit card"],
        n,
        p=[0.34, 0.2, 0.23, 0.23],
    )
    echeck = payment == "electronic check"
    usage_mean = np.select([fiber, internet == "dsl"], [28.0, 12.0], 1.5)
    usage = np.round(rng.lognormal(np.log(usage_mean), 0.7), 2)
    # Zipf-like region sizes: a few big metros, a long tail of small ones.
    region_w = 1.0 / np.arange(1, len(REGIONS) + 1) ** 0.8
    region_idx = rng.choice(len(REGIONS), n, p=region_w / region_w.sum())
    region = np.asarray(REGIONS)[region_idx]
    region_effect = rng.normal(0.0, 0.55, len(REGIONS))[region_idx]
    hidden = rng.normal(0.0, 0.85, n)  # what the data never shows

    # Outage-prone customers call support more; calls also track the latent unhappiness.
    outage_prone = (fiber & (rng.random(n) < 0.35)) | (rng.random(n) < 0.08)
    calls = rng.poisson(0.7 + 1.6 * outage_prone + 0.5 * np.clip(hidden, 0, None), n)
    days_inactive = np.clip(rng.exponential(9.0 + 14.0 * np.clip(hidden + 0.3, 0, None), n), 0, 170)

    structured = (
        1.0 * m2m
        - 0.8 * two_year
        + 1.1 * np.exp(-tenure / 9.0)
        + 0.9 * (m2m & (tenure < 12))
        + 0.9 * (fiber & (monthly > 88))
        + 0.38 * np.clip(calls - 2, 0, 4)
        + 0.35 * echeck
        + 0.75 * (senior & echeck)
        - 0.22 * (num_products - 1)
        + 0.55 * (usage < 2.0) * (internet != "none")
        + 0.9 * (days_inactive > 30)
        + 0.012 * days_inactive
        + region_effect
    )
    propensity = structured + hidden
    z = (propensity - propensity.mean()) / propensity.std()
    topic_logits = np.column_stack(
        [
            np.full(n, 0.2),  # none
            np.full(n, 0.6),  # neutral
            0.4 - 0.9 * z,  # happy
            -0.6 + 0.9 * (monthly > 80) + 0.5 * z,  # price
            -1.4 + 1.6 * outage_prone + 0.3 * z,  # outage
            -1.9 + 1.0 * z,  # cancel
        ]
    )
    topics = _categorical(rng, _softmax_rows(topic_logits))
    logit = propensity + TOPIC_EFFECT[topics]
    # Solve the intercept for the wanted positive rate (bisection: deterministic).
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(logit + mid).mean() < TARGET_POSITIVE_RATE else (lo, mid)
    churned = (rng.random(n) < _sigmoid(logit + lo)).astype(int)

    signup = SNAPSHOT.normalize() - pd.to_timedelta(
        tenure * 30.44 + rng.uniform(0, 30, n), unit="D"
    ).floor("D")
    last_active = SNAPSHOT - pd.to_timedelta(np.round(days_inactive * 1440), unit="min")

    ids = rng.permutation(np.arange(100_000, 100_000 + 4 * n))[:n]
    first = rng.integers(0, len(FIRST_NAMES), n)
    last = rng.integers(0, len(LAST_NAMES), n)
    domain = rng.choice(len(EMAIL_DOMAINS), n, p=EMAIL_DOMAIN_P)
    email_style = rng.integers(0, 3, n)
    emails = [
        (
            f"{FIRST_NAMES[f]}.{LAST_NAMES[la]}{k % 1000}",
            f"{FIRST_NAMES[f][0]}{LAST_NAMES[la]}{k % 97}",
            f"{FIRST_NAMES[f]}_{k}",
        )[s]
        + "@"
        + EMAIL_DOMAINS[d]
        for f, la, d, s, k in zip(first, last, domain, email_style, ids, strict=True)
    ]
    phones = np.array(_phones(rng, n), dtype=object)
    phones[rng.random(n) < 0.32] = None  # not every customer left a phone number

    df = pd.DataFrame(
        {
            "customer_id": [f"CUST-{i:07d}" for i in ids],
            "signup_date": signup.strftime("%Y-%m-%d"),
            "last_active": last_active.strftime("%Y-%m-%d %H:%M:%S"),
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls_90d": calls,
            "data_usage_gb": usage,
            "contract": contract,
            "payment_method": payment,
            "internet_service": internet,
            "region": region,
            "senior": senior,
            "num_products": num_products,
            "email": emails,
            "phone": phones,
            "last_message": _messages(rng, topics, monthly, region),
            "churned": churned,
        }
    )
    # ~3% missing values where real exports lose them.
    for column, share in (
        ("total_charges", 0.03),
        ("data_usage_gb", 0.03),
        ("payment_method", 0.025),
        ("support_calls_90d", 0.02),
    ):
        df[column] = df[column].astype("float64" if column != "payment_method" else object)
        df.loc[rng.random(n) < share, column] = None
    return df


def write(df: pd.DataFrame, path: Path = OUT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the gzip header would otherwise embed the time and change the bytes every run.
    df.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0, "compresslevel": 9})
    return path


if __name__ == "__main__":
    frame = make_churn()
    written = write(frame)
    print(
        f"wrote {written} ({len(frame)} rows, positive rate {frame['churned'].mean():.3f}, "
        f"{written.stat().st_size / 1e6:.2f} MB)"
    )
