"""The time budget (spec.search.timeBudgetSeconds), shared by search and evaluate.

The budget covers the search and evaluate's refit: the search stops early enough to leave the
refit of its likely pick (the ensemble's candidates, each on k/(k-1) x a fold's rows:
~REFIT_FACTOR x its mean fold fit) and evaluate's fixed work (interpreter and imports, the
baseline, the latency probe, the bundle and card: EVALUATE_OVERHEAD_SECONDS; the explanations:
EXPLAIN_SHARE of the budget). The search
records what is left (leaderboard.json `budget`); evaluate drops ensemble members whose refit
would not fit in it (`fit_budget`).
"""

from __future__ import annotations

import logging
import time

from aiml024.api.steps import LeaderboardRow, RefitBudget

log = logging.getLogger(__name__)

REFIT_FACTOR = 1.3
EVALUATE_OVERHEAD_SECONDS = 2.5
# What evaluate does after the refit (baseline, latency probe, bundle, card): kept free. The
# search reserves EVALUATE_OVERHEAD_SECONDS for this and the process start + imports (~1.5 s).
TAIL_SECONDS = 0.5
# The explanations (SHAP, permutation importance, PDP/ICE, counterfactuals) get this share of
# timeBudgetSeconds: the search leaves it free, and evaluate stops explaining when it is spent.
EXPLAIN_SHARE = 0.1


def explain_seconds(budget: float) -> float:
    return EXPLAIN_SHARE * budget


def refit_seconds(fit_seconds: float | None) -> float:
    """Estimated seconds to refit a trial's model on all the search rows, from the mean
    seconds of one fold's fit."""
    return REFIT_FACTOR * (fit_seconds or 0.0)


def fit_budget(
    board: list[LeaderboardRow], budget: RefitBudget | None, started: float
) -> list[str]:
    """Keep the refit within timeBudgetSeconds: the search left `remainingSeconds` (counted
    from this step's start). Ensemble members whose estimated refit would not fit are dropped,
    the lightest first (the remaining weights are renormalized; one left makes the ensemble
    that single trial); the ensemble row is changed in place. Returns the dropped members."""
    ensemble = next((row for row in board if row.name == "ensemble"), None)
    if budget is None or ensemble is None:
        return []
    available = started + budget.remaining_seconds - TAIL_SECONDS - time.monotonic()
    order = sorted(range(len(ensemble.members)), key=lambda i: -ensemble.weights[i])
    kept: list[int] = []
    spent = 0.0
    for i in order:
        cost = budget.refit_seconds.get(ensemble.members[i].rsplit("#", 1)[1], 0.0)
        if not kept or spent + cost <= available:
            kept.append(i)
            spent += cost
    if len(kept) == len(order):
        return []
    dropped = [ensemble.members[i] for i in order if i not in kept]
    kept.sort()
    total = sum(ensemble.weights[i] for i in kept)
    log.warning(
        "refit budget: %.1fs left; dropped ensemble members %s (estimated refit too long)",
        available,
        ", ".join(dropped),
    )
    if len(kept) == 1:  # the ensemble is now that trial: compete as it, not as a blend
        board.remove(ensemble)
        return dropped
    ensemble.members = [ensemble.members[i] for i in kept]
    ensemble.weights = [ensemble.weights[i] / total for i in kept]
    return dropped
