"""Serving a regression model: its answers are values, its rollouts and bake period are judged on mean absolute error.

The engine runs with real fitted scikit-learn regressors on the loans features (the "truth" is
a loan size of half the salary, give or take a thousand) and fakes for publish, promote and load,
as in ``test_serving_engine.py``; the sequential test of means is simulated A/A like the one of
proportions in ``test_serving_rollout_statistics.py``. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import numpy as np
import pytest
import structlog
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression
from structlog.testing import LogCapture

from flywheel.schemas import PREDICTIONS, ChampionChanged
from flywheel.serving import engine as engine_module
from flywheel.serving.rollout import Policy, VariantFigures, decide, judge
from flywheel.serving.rollouts import RolloutLog, figures_from
from flywheel.serving.sequential import Sample, compare_means
from tests.support.labelled import labelled
from tests.unit.test_serving_api import client, kafka_serving, stream, streamed_requests
from tests.unit.test_serving_engine import FEATURES, Harness, RichApproved, application, served, stepped
from tests.unit.test_serving_rollout_statistics import LOOK_EVERY, STEPS

NAME = "loans-approval"  # the harness's model: here a regressor of the loan size


def loan_size(i: int) -> float:
    """The label of application ``i``: half the salary, give or take up to a thousand."""
    return 0.5 * application(i)["salary"] + ((i * 7907) % 2001 - 1000)


def fitted(estimator):
    """``estimator`` fitted on 300 labelled applications (others than the tests score)."""
    records = [application(i) for i in range(10_000, 10_300)]
    estimator.fit(np.asarray(FEATURES.matrix(records), dtype=float), [loan_size(i) for i in range(10_000, 10_300)])
    return estimator


LINEAR = fitted(LinearRegression())  # errors of up to a thousand: the noise
MEAN = fitted(DummyRegressor(strategy="mean"))  # errors of ~12k: what the salary explains


async def labelled_traffic(h: Harness, n: int, start: int = 0, label=loan_size) -> list:
    """Score ``n`` single-record requests and label each answer at once with ``label(i)``."""
    answers = []
    for i in range(start, start + n):
        [answer], logged = h.engine.score(NAME, [application(i)])
        h.log.extend(logged)
        answers.append(answer)
        h.engine.on_labelled(labelled(logged, label(i)))
        await asyncio.sleep(0)  # let decisions the engine scheduled run
    return answers


async def test_a_regression_champion_answers_values_without_a_probability() -> None:
    h = Harness(None, champion=LINEAR)
    assert h.engine.champions[NAME].task == "regression"
    answers = await labelled_traffic(h, 5)
    assert all(isinstance(a.prediction, float) and a.probability is None for a in answers)
    assert all(abs(a.prediction - loan_size(i)) <= 1500 for i, a in enumerate(answers))
    assert all(isinstance(e.prediction, float) and e.probability is None for e in h.log)
    live = h.engine.live[NAME]
    assert live.labelled == 5 and live.accuracy is None and 0 < live.mae <= 1500


def test_predict_over_http_returns_a_regressors_values_and_no_probability() -> None:
    h = Harness(None, champion=LINEAR)
    http = client(h.engine)
    response = http.post("/predict", json={"dataset": "loans", "records": [application(i) for i in range(3)]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert all(isinstance(p["prediction"], float) and p["probability"] is None for p in predictions)
    schema = http.get("/openapi.json").json()["components"]["schemas"]["Prediction"]
    assert "probability" not in schema["required"]


async def test_kafka_answers_of_a_regressor_are_published_as_values() -> None:
    h = Harness(None, champion=LINEAR)
    broker, _, out = kafka_serving(engine=h.engine)
    requests = streamed_requests(4)
    await stream(broker, requests)
    answers = out[PREDICTIONS.name]
    assert sorted(a["request_id"] for a in answers) == [r.request_id for r in requests]
    assert all(isinstance(a["prediction"], float) and a["probability"] is None for a in answers)


async def test_a_better_regression_canary_steps_up_and_is_promoted_on_a_lower_mae() -> None:
    h = Harness(served("2", LINEAR), champion=MEAN)
    await h.engine.start_rollout(h.approve())
    answers = await labelled_traffic(h, 800)
    events = h.rollout_events()
    assert [e.action for e in events][:4] == ["started", "stepped", "stepped", "promoted"], [e.action for e in events]
    assert h.promoted == [(NAME, "2")] and answers[-1].model_version == "2"
    promoted = events[3]
    mae = promoted.tests["mae"]
    assert "accuracy" not in promoted.tests
    assert mae.significant and mae.candidate < mae.champion and mae.p_value <= mae.alpha
    assert promoted.reason.startswith("canary: mae ") and "better" in promoted.reason and "%)" not in promoted.reason
    candidate, champion = promoted.figures["candidate"], promoted.figures["champion"]
    assert 0 < candidate["mae"] < champion["mae"] and candidate["accuracy"] == -1.0


async def test_a_worse_regression_canary_is_rolled_back_with_an_mae_reason() -> None:
    h = Harness(served("2", MEAN), champion=LINEAR)
    await h.engine.start_rollout(h.approve())
    await labelled_traffic(h, 600)
    [rolled_back] = [e for e in h.rollout_events() if e.action == "rolled_back"]
    assert rolled_back.reason.startswith("mae ") and "is worse" in rolled_back.reason, rolled_back.reason
    assert rolled_back.tests["mae"].significant and rolled_back.tests["mae"].difference > 5_000
    assert h.promoted == [] and h.engine.champions[NAME].version == "1" and not h.engine.rollouts


async def test_numeric_string_labels_count_and_a_label_that_is_no_number_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    captured = LogCapture()  # the engine's own logger: structlog caches loggers configured by earlier tests
    monkeypatch.setattr(engine_module, "log", structlog.wrap_logger(None, processors=[captured]))
    h = Harness(None, champion=LINEAR)
    await labelled_traffic(h, 3, label=lambda i: str(loan_size(i)))  # "25500.0": a number in a string
    live = h.engine.live[NAME]
    assert live.labelled == 3 and live.mae <= 1500
    await labelled_traffic(h, 2, start=3, label=lambda i: "unknown")
    assert live.labelled == 3
    warnings = [e for e in captured.entries if e["log_level"] == "warning" and e["event"] == "label ignored"]
    assert len(warnings) == 2 and "is not a number" in warnings[0]["reason"]


async def test_a_regression_champion_worse_in_its_bake_period_is_rolled_back_on_mae() -> None:
    h = Harness(None, champion=LINEAR, bake_s=600)
    await labelled_traffic(h, 40)  # the old champion's live figures: errors within the noise
    h.candidate = served("2", MEAN)
    await h.engine.use_champion(
        ChampionChanged(model_name=NAME, version="2", action="promote", actor="ops", previous_version="1")
    )
    await labelled_traffic(h, 40, start=40)
    for _ in range(3):
        await asyncio.sleep(0)
    [(name, reason)] = h.rolled_back
    assert name == NAME and "bake period" in reason and "mae " in reason and "accuracy" not in reason


async def test_the_bake_period_of_a_regressor_is_rebuilt_from_the_log_on_its_mae() -> None:
    baseline = VariantFigures(requests=50, task="regression")
    for i in range(40):
        baseline.credit(abs((i * 7907) % 2001 - 1000.0))
    rebuilt = figures_from(baseline.as_dict())
    assert rebuilt.task == "regression" and rebuilt.labelled == 40
    assert np.isclose(rebuilt.mae, baseline.mae) and np.isclose(
        rebuilt.abs_errors.variance, baseline.abs_errors.variance
    )
    h = Harness(None, bake_s=600)
    h.engine.champions[NAME] = served("2", MEAN)  # promoted before serving restarted
    h.engine.rearm(RolloutLog.fold([stepped("promoted", figures={"champion": baseline.as_dict()})]))
    await labelled_traffic(h, 40)
    for _ in range(3):
        await asyncio.sleep(0)
    [(_, reason)] = h.rolled_back
    assert "mae " in reason


async def test_a_classifier_is_not_rolled_out_against_a_regression_champion() -> None:
    h = Harness(served("2", RichApproved()), champion=LINEAR)
    aborted = await h.engine.start_rollout(h.approve())
    assert aborted is not None and aborted.action == "aborted" and "cannot be compared" in aborted.reason
    assert not h.engine.rollouts and h.engine.champions[NAME].version == "1"


# -- the sequential test of means, simulated ------------------------------------------------------


def half_normal(rng: random.Random) -> float:
    """The absolute error of an unbiased model with normal noise."""
    return abs(rng.gauss(0.0, 10.0))


def lognormal(rng: random.Random) -> float:
    """Skewed errors with a long tail: mostly small, now and then far off."""
    return rng.lognormvariate(0.0, 1.0)


def ever_significant(rng: random.Random, draw, alpha: float, tau: float = 0.1, most: int = 2000) -> bool:
    """Both variants' errors from ``draw``, looked at every ``LOOK_EVERY`` pairs from 100 on: ever significant?"""
    sums = {"candidate": [0, 0.0, 0.0], "champion": [0, 0.0, 0.0]}
    for n in range(1, most + 1):
        for summed in sums.values():
            error = draw(rng)
            summed[0] += 1
            summed[1] += error
            summed[2] += error * error
        if n >= 100 and n % LOOK_EVERY == 0:
            compared = compare_means("mae", Sample(*sums["candidate"]), Sample(*sums["champion"]), tau, alpha)
            if compared.significant:
                return True
    return False


def test_aa_mean_errors_are_called_different_no_more_often_than_the_level_however_often_looked_at() -> None:
    n, alpha = 500, 0.05
    for seed, draw in enumerate((half_normal, lognormal), start=20):
        rng = random.Random(seed)
        false_positives = sum(ever_significant(rng, draw, alpha) for _ in range(n)) / n
        print(
            f"\nA/A compare_means, {draw.__name__} errors: {n} runs of up to 2000 per variant, looked at every "
            f"{LOOK_EVERY}: false-positive rate {false_positives:.3f} (level {alpha})"
        )
        assert false_positives <= alpha


def simulate_regression_canary(rng: random.Random, champion_mae: float, candidate_mae: float, policy: Policy) -> str:
    """One canary of a regressor to its end by ``judge`` and ``decide`` (half-normal errors, a label a request)."""
    scale = {"champion": champion_mae / 0.7979, "candidate": candidate_mae / 0.7979}  # E|N(0, s)| = 0.7979 s
    figures = {"champion": VariantFigures(task="regression"), "candidate": VariantFigures(task="regression")}
    step, step_requests = 0, 0
    for request in range(1, int(policy.max_s) + 1):
        variant = "candidate" if rng.random() < STEPS[step] else "champion"
        answered = figures[variant]
        answered.requests += 1
        answered.errors += rng.random() < 0.01
        answered.timed += 1
        answered.slow += rng.random() < 0.02
        answered.credit(abs(rng.gauss(0.0, scale[variant])))
        step_requests += variant == "candidate"
        if request % LOOK_EVERY and request != int(policy.max_s):
            continue
        verdict = judge(figures["candidate"], figures["champion"], policy)
        decision = decide("canary", step, STEPS, verdict, step_requests, float(request), policy)
        if decision.action == "step":
            step, step_requests = step + 1, 0
        elif decision.action != "hold":
            return decision.action
    raise AssertionError("a rollout past its time limit must end inconclusive")


def test_aa_regression_canaries_promote_or_roll_back_no_more_often_than_the_level() -> None:
    n, policy = 300, Policy(alpha=0.05, tau=0.1, min_labels=100, min_requests=100, max_s=4000)
    rng = random.Random(31)
    actions = Counter(simulate_regression_canary(rng, 10.0, 10.0, policy) for _ in range(n))
    false_positives = (actions["promote"] + actions["rollback"]) / n
    print(f"\nA/A regression canaries, mae 10 vs 10: {dict(actions)}; false-positive rate {false_positives:.3f}")
    assert sum(actions.values()) == n and false_positives <= policy.alpha


def test_regression_canaries_with_a_real_difference_decide_the_right_way() -> None:
    """A fifth less (or more) mean absolute error: a canary finds it, and never the wrong way."""
    n, policy = 100, Policy(alpha=0.05, tau=0.1, min_labels=100, min_requests=100, max_s=6000)
    better = Counter(simulate_regression_canary(random.Random(32 + i), 10.0, 8.0, policy) for i in range(n))
    worse = Counter(simulate_regression_canary(random.Random(232 + i), 8.0, 10.0, policy) for i in range(n))
    print(f"\nregression canaries, mae 10 -> 8: {dict(better)}; 8 -> 10: {dict(worse)}")
    assert better["promote"] / n >= 0.9 and worse["rollback"] / n >= 0.9 and worse["promote"] == 0
