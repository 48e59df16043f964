"""The online challenger's decisions (training's ``challenger``), on a synthetic concept change: when a drift
opens an episode, which snapshots it proposes and on what evidence, and what ends it."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from flywheel.common.featuresets import FeatureSet
from flywheel.common.modelspec import ModelSpec
from flywheel.training.challenger import OnlineChallenger, Row
from flywheel.training.handlers import retrain_request_id

FEATURES = FeatureSet(
    feature_set="f",
    dataset="d",
    entity_key="id",
    timestamp="at",
    features=[{"name": "x", "inputs": ["x"]}, {"name": "z", "inputs": ["z"]}],
)


def spec(**challenger: object) -> ModelSpec:
    settings = {
        "estimator": {"path": "river.tree.HoeffdingTreeClassifier", "params": {"grace_period": 20}},
        "backfill_rows": 20,
        "min_rows": 40,
        "held_out": 40,
        **challenger,
    }
    return ModelSpec(
        model_name="m",
        dataset="d",
        label="y",
        estimator={"path": "sklearn.tree.DecisionTreeClassifier"},
        online_challenger=settings,
    )


def rows(
    n: int, *, served_right: float, seed: int = 0, noise: bool = False, start: int = 0, served_by: str = "1"
) -> list[Row]:
    """The new concept (y = x > 0.5), served by a champion right ``served_right`` of the time."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(start, start + n):
        x, z = float(rng.random()), float(rng.random())
        label = int(rng.random() < 0.5) if noise else int(x > 0.5)
        served = label if rng.random() < served_right else 1 - label
        made.append(Row({"x": x, "z": z}, label, served, label_id=f"label-{i}", served_by=served_by))
    return made


def learn_all(challenger: OnlineChallenger, stream: list[Row], now: float = 1.0) -> list:
    return [p for r in stream if (p := challenger.learn(r, now))]


DRIFT = str(uuid.uuid4())


def test_no_drift_no_snapshot_however_wrong_the_champion_is():
    challenger = OnlineChallenger(spec(), FEATURES)
    assert learn_all(challenger, rows(600, served_right=0.3)) == []
    assert challenger.episode is None


def test_a_snapshot_is_judged_on_labels_it_never_learnt_and_proposed_when_it_beats_the_served_answers():
    challenger = OnlineChallenger(spec(), FEATURES)
    learn_all(challenger, rows(100, served_right=0.5, seed=1))
    challenger.on_drift(DRIFT, now=0.0)
    [proposal, *_] = learn_all(challenger, rows(400, served_right=0.5, seed=2, start=100))
    learnt = {r.label_id for r in proposal.learned}
    assert learnt.isdisjoint(r.label_id for r in proposal.window)
    assert len(proposal.learned) >= 40 and len(proposal.window) == 40
    assert proposal.drift_id == DRIFT and proposal.metric == "balanced_accuracy"
    assert proposal.scores["copy"] > proposal.scores["served"] + 0.02
    # the snapshot is the frozen copy, which learns no more: its answers are those it was judged by
    window = np.asarray([FEATURES.vector(r.inputs) for r in proposal.window])
    assert proposal.model.model_.n_active_leaves == 0 and len(proposal.model.predict(window)) == 40


def test_no_snapshot_that_the_registry_would_reject_as_no_better_than_chance():
    challenger = OnlineChallenger(spec(), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    # labels no model can learn, and a champion wrong 60% of the time: beating it is luck, not learning
    assert learn_all(challenger, rows(2000, served_right=0.4, noise=True, seed=3)) == []


def test_a_redelivered_label_is_learnt_once():
    challenger = OnlineChallenger(spec(), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    stream = rows(30, served_right=0.5, seed=4)
    learn_all(challenger, stream + stream)
    assert challenger.episode is not None and len(challenger.episode.learned) == 30


def test_one_snapshot_at_a_time_until_its_verdict_and_its_rollouts_end():
    challenger = OnlineChallenger(spec(margin=0.0), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    stream = rows(3000, served_right=0.5, seed=5)
    first = next(p for r in stream[:500] if (p := challenger.learn(r, 1.0)))
    challenger.logged(first, "run-1")
    assert learn_all(challenger, stream[500:1000]) == [], "a second snapshot while the first is judged"
    challenger.verdict("run-1", "2", approved=True)
    assert learn_all(challenger, stream[1000:1500]) == [], "a second snapshot while the first rolls out"
    challenger.rollout_ended("2", promoted=True)
    # labels come late: answers v1 served still arrive, and say nothing of what v2 must beat
    assert learn_all(challenger, rows(300, served_right=0.2, seed=9, start=5000)) == []
    served_by_v2 = rows(1000, served_right=0.6, seed=10, start=6000, served_by="2")
    second = next(p for r in served_by_v2[:500] if (p := challenger.learn(r, 1.0)))
    assert second.number == 2 and challenger.episode.promoted == ["2"]
    challenger.logged(second, "run-2")
    challenger.verdict("run-2", None, approved=False)  # rejected: the next may come
    assert learn_all(challenger, served_by_v2[500:])


def test_the_episode_ends_at_its_candidates_limit():
    challenger = OnlineChallenger(spec(max_candidates=1, margin=0.0), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    [proposal, *_] = learn_all(challenger, rows(500, served_right=0.5, seed=6))
    challenger.logged(proposal, "run-1")
    challenger.verdict("run-1", None, approved=False)
    assert challenger.episode is None and challenger.ended[DRIFT] == "no snapshot approved"
    challenger.on_drift(DRIFT, now=2.0)  # a redelivered drift opens no second episode
    assert challenger.episode is None


@pytest.mark.parametrize("answered", [{DRIFT}, {str(retrain_request_id(uuid.UUID(DRIFT)))}])
def test_the_drifts_batch_retrain_ends_the_episode_and_another_run_does_not(answered):
    challenger = OnlineChallenger(spec(), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    challenger.batch_arrived({str(uuid.uuid4())})
    assert challenger.episode is not None
    challenger.batch_arrived(answered)
    assert challenger.episode is None and challenger.ended[DRIFT] == "the batch retrain arrived"


def test_an_episode_ends_after_its_time_limit():
    challenger = OnlineChallenger(spec(max_s=60), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    assert learn_all(challenger, rows(500, served_right=0.5, seed=7), now=61.0) == []
    assert challenger.ended[DRIFT] == "timed out"


def test_a_regressor_is_judged_on_its_error():
    regression = spec(estimator={"path": "river.linear_model.LinearRegression"}, margin=0.05)
    regression = regression.model_copy(
        update={
            "task": "regression",
            "estimator": regression.estimator.model_copy(update={"path": "sklearn.linear_model.LinearRegression"}),
        }
    )
    challenger = OnlineChallenger(regression, FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    rng = np.random.default_rng(8)
    stream = []
    for i in range(600):
        x = float(rng.random())
        stream.append(Row({"x": x, "z": 0.0}, 10 * x, served=10 * x + 3.0, label_id=str(i)))
    [proposal, *_] = learn_all(challenger, stream)
    assert proposal.metric == "rmse" and proposal.scores["copy"] > proposal.scores["served"]


def test_a_snapshot_logged_after_its_episode_ended_is_not_proposed():
    challenger = OnlineChallenger(spec(), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    [proposal, *_] = learn_all(challenger, rows(500, served_right=0.5, seed=11))
    assert challenger.awaits(proposal)
    challenger.batch_arrived({DRIFT})  # while it was logged
    assert not challenger.awaits(proposal)


def test_a_drift_after_an_episode_that_outlived_its_time_opens_a_new_one():
    challenger = OnlineChallenger(spec(max_s=60), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    [proposal, *_] = learn_all(challenger, rows(500, served_right=0.5, seed=12))
    challenger.logged(proposal, "run-1")  # its verdict never comes (a manual approval, say), nor any label
    later = str(uuid.uuid4())
    challenger.on_drift(later, now=100.0)
    assert challenger.ended[DRIFT] == "timed out" and challenger.episode.drift_id == later


def test_a_rollout_that_ended_before_its_verdict_was_read_does_not_hold_the_episode():
    challenger = OnlineChallenger(spec(margin=0.0), FEATURES)
    challenger.on_drift(DRIFT, now=0.0)
    stream = rows(2000, served_right=0.5, seed=13)
    first = next(p for r in stream[:500] if (p := challenger.learn(r, 1.0)))
    challenger.logged(first, "run-1")
    challenger.rollout_ended("2", promoted=False)  # aborted at once, its event read first
    challenger.verdict("run-1", "2", approved=True)
    assert challenger.episode.rolling is None and learn_all(challenger, stream[500:])
