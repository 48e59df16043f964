"""Serving's rollout decisions, simulated: how often they are wrong, and how often right.

Each simulated rollout is a canary driven by the real decision code (``judge`` and ``decide``):
requests are routed by the step's traffic share, every answer is labelled at once (right with
its variant's true accuracy), fails or is slow at the same small rate for both variants, and
the rollout looks at its figures every ``LOOK_EVERY`` requests, as the driver does on every
label. A/A rollouts (the same true accuracy) must promote or roll back no more often than the
configured level; A/B rollouts with a real difference must decide, and the right way.

Run with ``-s`` to see the figures:
``.venv/bin/python -m pytest tests/unit/test_serving_rollout_statistics.py -s``.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass, replace

from flywheel.serving.rollout import Policy, VariantFigures, decide, judge

STEPS = [0.1, 0.25, 0.5, 1.0]  # serving's default canary
LOOK_EVERY = 10
# serving's defaults but the time limit, counted here in requests (one a second)
POLICY = Policy(alpha=0.05, tau=0.1, min_labels=100, min_requests=100, max_s=4000)


@dataclass
class Outcome:
    action: str  # promote, rollback, inconclusive
    labels: int  # labelled answers (both variants) the decision used


def simulate(
    rng: random.Random,
    champion_accuracy: float,
    candidate_accuracy: float,
    policy: Policy = POLICY,
    error_rate: float = 0.01,
    slow_rate: float = 0.02,
) -> Outcome:
    """One canary rollout to its end; one request per simulated second, so ``max_s`` is in requests."""
    accuracy = {"champion": champion_accuracy, "candidate": candidate_accuracy}
    figures = {"champion": VariantFigures(), "candidate": VariantFigures()}
    step, step_requests = 0, 0
    for request in range(1, int(policy.max_s) + 1):
        variant = "candidate" if rng.random() < STEPS[step] else "champion"
        answered = figures[variant]
        answered.requests += 1
        answered.errors += rng.random() < error_rate
        answered.timed += 1
        answered.slow += rng.random() < slow_rate
        answered.labelled += 1
        answered.correct += rng.random() < accuracy[variant]
        step_requests += variant == "candidate"
        if request % LOOK_EVERY and request != int(policy.max_s):
            continue
        verdict = judge(figures["candidate"], figures["champion"], policy)
        decision = decide("canary", step, STEPS, verdict, step_requests, float(request), policy)
        if decision.action == "step":
            step, step_requests = step + 1, 0
        elif decision.action != "hold":
            return Outcome(decision.action, figures["candidate"].labelled + figures["champion"].labelled)
    raise AssertionError("a rollout past its time limit must end inconclusive")


def run(
    n: int, champion_accuracy: float, candidate_accuracy: float, seed: int, policy: Policy = POLICY
) -> tuple[Counter, list[int]]:
    rng = random.Random(seed)
    outcomes = [simulate(rng, champion_accuracy, candidate_accuracy, policy) for _ in range(n)]
    return Counter(o.action for o in outcomes), [o.labels for o in outcomes if o.action != "inconclusive"]


def test_aa_rollouts_promote_or_roll_back_no_more_often_than_the_level() -> None:
    n = 500
    actions, _ = run(n, 0.8, 0.8, seed=14)
    false_positives = (actions["promote"] + actions["rollback"]) / n
    print(
        f"\nA/A: {n} canary rollouts at 80% vs 80%, looked at every {LOOK_EVERY} requests up to "
        f"{POLICY.max_s:.0f}: {dict(actions)}; false-positive rate {false_positives:.3f} (level {POLICY.alpha})"
    )
    assert actions["inconclusive"] + actions["promote"] + actions["rollback"] == n
    assert false_positives <= POLICY.alpha


def test_ab_rollouts_with_a_real_difference_decide_the_right_way_with_high_power() -> None:
    """Ten points of accuracy, with enough traffic: a canary's ramp (10% first) costs labels."""
    n, patient = 100, replace(POLICY, max_s=6000)
    better, better_labels = run(n, 0.8, 0.9, seed=15, policy=patient)
    worse, worse_labels = run(n, 0.9, 0.8, seed=16, policy=patient)
    power_better, power_worse = better["promote"] / n, worse["rollback"] / n
    print(
        f"\nA/B better (80% -> 90%), {n} rollouts: {dict(better)}; power {power_better:.3f}, "
        f"median labels {statistics.median(better_labels):.0f}"
        f"\nA/B worse (90% -> 80%), {n} rollouts: {dict(worse)}; power {power_worse:.3f}, "
        f"median labels {statistics.median(worse_labels):.0f}"
    )
    # a better candidate rolled back on error rate or latency, the same in both, is a false positive
    assert better["rollback"] / n <= POLICY.alpha and worse["promote"] == 0
    assert power_better >= 0.9 and power_worse >= 0.9
