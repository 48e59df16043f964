"""Serving's engine: routing, the prediction log, and rollouts to promotion or rollback."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from flywheel.common.featuresets import load_feature_set
from flywheel.common.kafka import PublishFailed
from flywheel.common.modelspec import RolloutSpec
from flywheel.schemas import (
    AlertRaised,
    ChampionChanged,
    Event,
    ModelApproved,
    PredictionMade,
    RolloutStepped,
)
from flywheel.serving.engine import Engine
from flywheel.serving.models import ServedModel
from flywheel.serving.predictlog import PredictionLog
from flywheel.serving.rollouts import RolloutLog
from flywheel.serving.settings import ServingSettings
from tests.support.labelled import labelled
from tests.unit.test_ingestion_kafka import loan

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
FEATURES = load_feature_set(DATASETS, "loans")
SALARY = FEATURES.names.index("salary")


class RichApproved:
    """Approves applicants earning over 50k: the 'truth' of these tests."""

    classes_ = [0, 1]

    def predict_proba(self, matrix):
        import numpy as np

        positive = (matrix[:, SALARY] > 50_000).astype(float)
        return np.column_stack([1 - positive, positive])


class MostlyRight:
    """Wrong on salaries from 50k to 70k (a fifth of the traffic): a champion a better model can beat."""

    classes_ = [0, 1]

    def predict_proba(self, matrix):
        import numpy as np

        positive = (matrix[:, SALARY] > 70_000).astype(float)
        return np.column_stack([1 - positive, positive])


class Constant:
    """Always the same answer: the deliberately bad model."""

    def __init__(self, value: int) -> None:
        self.value = value

    def predict(self, matrix):
        return [self.value] * len(matrix)


class Broken:
    def predict(self, matrix):
        raise RuntimeError("model exploded")


class FailsOnTheRich:
    """Warms up fine, then fails on real traffic."""

    def predict(self, matrix):
        if (matrix[:, SALARY] > 50_000).any():
            raise RuntimeError("model exploded")
        return [0] * len(matrix)


def served(version: str, estimator) -> ServedModel:
    return ServedModel("loans-approval", version, "loans", estimator, FEATURES)


def application(i: int) -> dict:
    """A loan application without its label, salaries spread across the 50k rule."""
    record = loan(applicant_id=f"a-{i}", salary=20_000.0 + (i * 7919) % 100_000)
    record.pop("approved")
    return record


def truth(record: dict) -> int:
    return int(record["salary"] > 50_000)


class Harness:
    def __init__(
        self, candidate: ServedModel | None, champion=None, specs: dict[str, RolloutSpec] | None = None, **overrides
    ) -> None:
        settings = ServingSettings(
            **{
                "min_requests": 20,
                "min_labels": 10,
                "canary_steps": [0.25, 0.5, 1.0],
                "slow_ms": 10_000,  # wall-clock latency on a busy test machine is noise
                **overrides,
            }
        )
        self.published: list[Event] = []
        self.promoted: list[tuple[str, str]] = []
        self.promote_causes: list[uuid.UUID] = []
        self.rolled_back: list[tuple[str, str]] = []
        self.log: list[PredictionMade] = []
        self.candidate = candidate

        async def publish(event: Event) -> None:
            self.published.append(event)

        async def promote(name: str, version: str, reason: str, cause: uuid.UUID) -> None:
            self.promoted.append((name, version))
            self.promote_causes.append(cause)

        async def load(name: str, version: str) -> ServedModel | None:
            if isinstance(self.candidate, Exception):
                raise self.candidate
            return self.candidate

        async def rollback(name: str, reason: str) -> None:
            self.rolled_back.append((name, reason))

        self.engine = Engine(settings, publish, promote, load, rollback, specs)
        self.engine.champions["loans-approval"] = served("1", champion or RichApproved())

    def approve(self, version: str = "2") -> ModelApproved:
        return ModelApproved(
            producer="test",
            model_name="loans-approval",
            version=version,
            run_id="r",
            model_uri=f"models:/loans-approval/{version}",
            metrics={},
            gates=[],
            champion_version="1",
        )

    async def traffic(self, n: int, start: int = 0) -> list:
        """Score ``n`` single-record requests and label every answer at once."""
        answers = []
        for i in range(start, start + n):
            record = application(i)
            [answer], logged = self.engine.score("loans-approval", [record])
            self.log.extend(logged)
            answers.append(answer)
            self.engine.on_labelled(labelled(logged, truth(record)))
            await asyncio.sleep(0)  # let decisions the engine scheduled run
        return answers

    def rollout_events(self) -> list[RolloutStepped]:
        return [e for e in self.published if isinstance(e, RolloutStepped)]

    def logged(self) -> list[PredictionMade]:
        return self.log


async def test_the_champion_answers_when_no_rollout_runs() -> None:
    h = Harness(None)
    answers = await h.traffic(5)
    assert {(a.model_version, a.variant) for a in answers} == {("1", "champion")}
    assert [a.prediction for a in answers] == [truth(application(i)) for i in range(5)]
    assert all(a.probability in (0.0, 1.0) for a in answers)
    logged = h.logged()
    assert len(logged) == 5 and all(e.served and e.features["salary"] is not None for e in logged)


async def test_shadow_logs_both_variants_and_returns_only_the_champion() -> None:
    h = Harness(served("2", Constant(1)), strategy="shadow")
    started = await h.engine.start_rollout(h.approve())
    assert started is not None and started.action == "started" and started.strategy == "shadow"
    answers = await h.traffic(8)
    assert {a.variant for a in answers} == {"champion"}
    logged = h.logged()
    shadow = [e for e in logged if not e.served]
    assert len(shadow) == 8 and {e.model_version for e in shadow} == {"2"} and {e.variant for e in shadow} == {"shadow"}
    assert {e.prediction for e in shadow} == {1}
    assert len([e for e in logged if e.served]) == 8


async def test_a_better_canary_steps_up_to_full_traffic_and_is_promoted() -> None:
    h = Harness(served("2", RichApproved()), champion=MostlyRight())
    await h.engine.start_rollout(h.approve())
    answers = await h.traffic(800)
    actions = [e.action for e in h.rollout_events()]
    assert actions[:4] == ["started", "stepped", "stepped", "promoted"], actions
    traffic = [e.candidate_traffic for e in h.rollout_events()]
    assert traffic[:4] == [0.25, 0.5, 1.0, 1.0]
    assert h.promoted == [("loans-approval", "2")]
    assert h.engine.champions["loans-approval"].version == "2" and not h.engine.rollouts
    assert answers[-1].model_version == "2"
    promoted = h.rollout_events()[3]
    accuracy = promoted.tests["accuracy"]  # the sequential test the promotion rests on
    assert accuracy.significant and accuracy.candidate > accuracy.champion and accuracy.p_value <= accuracy.alpha
    assert promoted.alpha == 0.05 and "better" in promoted.reason
    # the registry's champion move names the promoted step as its cause: the chain has no hole there
    assert h.promote_causes == [promoted.event_id]
    assert promoted.causation_id == h.rollout_events()[2].event_id


async def test_a_models_own_rollout_spec_wins_over_servings_settings() -> None:
    """``model.yaml``'s ``rollout`` (a slow-labelled model's bigger first step) over serving's canary steps."""
    h = Harness(
        served("2", RichApproved()),
        champion=MostlyRight(),
        specs={"loans-approval": RolloutSpec(canary_steps=[0.5, 1.0])},
    )
    await h.engine.start_rollout(h.approve())
    await h.traffic(400)
    events = h.rollout_events()
    assert [e.action for e in events][:3] == ["started", "stepped", "promoted"], [e.action for e in events]
    assert [e.candidate_traffic for e in events][:2] == [0.5, 1.0]
    other = Harness(
        served("2", RichApproved()),
        strategy="blue_green",
        specs={"loans-approval": RolloutSpec(strategy="ab", ab_split=0.3)},
    )
    started = await other.engine.start_rollout(other.approve())
    assert started is not None and (started.strategy, started.candidate_traffic) == ("ab", 0.3)


async def test_a_canary_as_good_as_the_champion_ends_inconclusive_at_its_time_limit() -> None:
    # a limit the traffic cannot outlast on a busy machine (300 requests took 0.6 s beside a stack start)
    h = Harness(served("2", RichApproved()), rollout_max_s=2.0)
    started = time.monotonic()
    await h.engine.start_rollout(h.approve())
    await h.traffic(300)  # both always right: no difference to find
    assert [e.action for e in h.rollout_events()] == ["started"]
    await asyncio.sleep(max(0.0, 2.1 - (time.monotonic() - started)))
    h.engine.driver.expire()  # serving's watch does this every few seconds, traffic or not
    await asyncio.sleep(0)
    ended = h.rollout_events()[-1]
    assert ended.action == "inconclusive" and "the champion stays" in ended.reason, ended
    assert ended.elapsed_s is not None and ended.elapsed_s >= 2.0
    assert h.promoted == [] and h.engine.champions["loans-approval"].version == "1" and not h.engine.rollouts


async def test_a_constant_canary_is_rolled_back_with_the_reason_and_the_champion_stays() -> None:
    h = Harness(served("2", Constant(0)))
    await h.engine.start_rollout(h.approve())
    await h.traffic(400)
    rolled_back = [e for e in h.rollout_events() if e.action == "rolled_back"]
    assert len(rolled_back) == 1 and "accuracy" in rolled_back[0].reason
    assert rolled_back[0].figures["candidate"]["accuracy"] < rolled_back[0].figures["champion"]["accuracy"]
    assert h.promoted == [] and h.engine.champions["loans-approval"].version == "1" and not h.engine.rollouts


async def test_a_failing_candidate_never_fails_a_request_and_is_rolled_back() -> None:
    h = Harness(served("2", FailsOnTheRich()), canary_steps=[1.0])
    await h.engine.start_rollout(h.approve())
    answers = await h.traffic(100)
    assert all(a.prediction == truth(application(i)) for i, a in enumerate(answers))
    assert all(a.model_version == "1" for a in answers if a.prediction == 1)
    rolled_back = [e for e in h.rollout_events() if e.action == "rolled_back"]
    assert len(rolled_back) == 1 and "error rate" in rolled_back[0].reason
    assert rolled_back[0].tests["error_rate"].significant and rolled_back[0].tests["error_rate"].difference > 0.5


async def test_a_candidate_that_cannot_score_is_never_switched_to() -> None:
    h = Harness(served("2", Broken()), strategy="blue_green")
    aborted = await h.engine.start_rollout(h.approve())
    assert aborted is not None and aborted.action == "aborted" and "exploded" in aborted.reason
    assert h.engine.champions["loans-approval"].version == "1"


async def test_a_candidate_that_fails_to_load_aborts_and_the_old_model_keeps_serving() -> None:
    h = Harness(RuntimeError("artifact missing"))
    aborted = await h.engine.start_rollout(h.approve())
    assert aborted is not None and aborted.action == "aborted" and "artifact missing" in aborted.reason
    assert (await h.traffic(3))[0].model_version == "1"


async def test_ab_is_sticky_per_entity_and_keeps_per_variant_figures() -> None:
    h = Harness(served("2", RichApproved()), strategy="ab", min_requests=10_000)
    await h.engine.start_rollout(h.approve())
    first = {a.prediction_id: a.variant for a in await h.traffic(50)}
    again = [a.variant for a in await h.traffic(50)]  # the same 50 entities
    assert list(first.values()) == again
    figures = h.engine.rollouts["loans-approval"].describe()["figures"]
    assert figures["champion"]["requests"] > 0 and figures["candidate"]["requests"] > 0


async def test_blue_green_switches_all_traffic_at_once() -> None:
    h = Harness(served("2", RichApproved()), strategy="blue_green")
    await h.engine.start_rollout(h.approve())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [e.action for e in h.rollout_events()] == ["started", "promoted"]
    assert (await h.traffic(1))[0].model_version == "2"


async def test_a_refused_promotion_rolls_back_instead_of_serving_an_unregistered_champion() -> None:
    h = Harness(served("2", RichApproved()), strategy="blue_green")

    async def refuse(name: str, version: str, reason: str, cause: uuid.UUID) -> None:
        raise RuntimeError("registry refused promotion (401)")

    h.engine.driver._promote = refuse
    await h.engine.start_rollout(h.approve())
    for _ in range(3):
        await asyncio.sleep(0)
    assert h.rollout_events()[-1].action == "rolled_back"
    assert h.engine.champions["loans-approval"].version == "1"


async def test_approving_the_serving_champion_starts_nothing() -> None:
    h = Harness(served("1", RichApproved()))
    assert await h.engine.start_rollout(h.approve("1")) is None


def stepped(action: str, step: int = 0, champion: str = "1", figures: dict | None = None) -> RolloutStepped:
    return RolloutStepped(
        producer="serving",
        model_name="loans-approval",
        candidate_version="2",
        champion_version=champion,
        strategy="canary",
        action=action,
        step=step,
        candidate_traffic=[0.25, 0.5, 1.0][step],  # the harness's canary steps
        figures=figures or {},
    )


async def test_a_restarted_engine_resumes_a_canary_at_its_step_from_the_rollout_log() -> None:
    h = Harness(served("2", RichApproved()), champion=MostlyRight())
    resumed = await h.engine.resume(RolloutLog.fold([stepped("started"), stepped("stepped", step=1)]))
    assert [(e.action, e.step) for e in resumed] == [("started", 1)] and "resumed" in resumed[0].reason
    assert h.engine.rollouts["loans-approval"].traffic == 0.5
    edited = Harness(served("2", RichApproved()), canary_steps=[0.5, 1.0])  # the steps changed while it was down
    await edited.engine.resume(RolloutLog.fold([stepped("started"), stepped("stepped", step=1)]))
    assert edited.engine.rollouts["loans-approval"].traffic == 0.5, "resumed at the same share, not a jump to 100%"
    await h.traffic(400)
    assert h.promoted == [("loans-approval", "2")]
    # the approval redelivered after the restart does not start the decided rollout again
    assert await h.engine.start_rollout(h.approve().model_copy(update={"producer": "registry"})) is None


async def test_a_resumed_rollout_starts_from_its_last_events_figures_and_takes_the_labels_it_missed() -> None:
    h = Harness(served("2", RichApproved()), champion=MostlyRight())
    logged = {
        "candidate": {"requests": 60, "errors": 0, "labelled": 40, "correct": 38},
        "champion": {"requests": 140, "errors": 1, "labelled": 90, "correct": 70},
    }
    await h.engine.resume(RolloutLog.fold([stepped("started"), stepped("stepped", step=1, figures=logged)]))
    rollout = h.engine.rollouts["loans-approval"]
    assert rollout.figures["candidate"].as_dict() | logged["candidate"] == rollout.figures["candidate"].as_dict()
    assert (rollout.figures["champion"].labelled, rollout.figures["champion"].correct) == (90, 70)
    assert rollout.step_figures.requests == 0, "this step's answers are counted afresh"
    answer = PredictionMade(
        producer="serving",
        dataset="loans",
        prediction_id="p1",
        request_id="r1",
        model_name="loans-approval",
        model_version="2",
        variant="candidate",
        prediction=1,
        latency_ms=1.0,
    )
    h.engine.credit_missed(labelled([answer], 1))  # joined while this replica was down
    assert (rollout.figures["candidate"].labelled, rollout.figures["candidate"].correct) == (41, 39)
    assert rollout.step_figures.labelled == 1


async def test_a_rollout_whose_champion_changed_while_serving_was_down_ends_with_the_reason() -> None:
    h = Harness(served("2", RichApproved()))
    [aborted] = await h.engine.resume(RolloutLog.fold([stepped("started", champion="0")]))
    assert aborted.action == "aborted" and "champion is now 1, not 0" in aborted.reason
    assert not h.engine.rollouts and h.engine.champions["loans-approval"].version == "1"


async def test_a_resumed_candidate_that_fails_to_load_aborts_with_the_reason() -> None:
    h = Harness(RuntimeError("artifact gone"))
    [aborted] = await h.engine.resume(RolloutLog.fold([stepped("started")]))
    assert aborted.action == "aborted" and "artifact gone" in aborted.reason


async def test_a_champion_that_worsens_in_its_bake_period_is_rolled_back_by_itself() -> None:
    h = Harness(None, bake_s=600)
    await h.traffic(40)  # the old champion's live figures: always right
    new = served("2", Constant(0))
    h.candidate = new
    await h.engine.use_champion(
        ChampionChanged(model_name="loans-approval", version="2", action="promote", actor="ops", previous_version="1")
    )
    await h.traffic(40, start=40)
    for _ in range(3):
        await asyncio.sleep(0)
    [(name, reason)] = h.rolled_back
    assert name == "loans-approval" and "bake period" in reason and "accuracy" in reason


async def test_a_champion_as_good_as_its_predecessor_stays_after_its_bake_period() -> None:
    h = Harness(None, bake_s=600)
    await h.traffic(40)
    h.candidate = served("2", RichApproved())
    await h.engine.use_champion(
        ChampionChanged(model_name="loans-approval", version="2", action="promote", actor="ops", previous_version="1")
    )
    await h.traffic(60, start=40)
    assert h.rolled_back == [] and h.engine.champions["loans-approval"].version == "2"


async def test_labels_that_arrive_after_a_promotion_credit_the_version_that_answered() -> None:
    """Labels arrive late: the old champion's wrong answers, labelled after the new one took over,
    must not count against the new one in its bake period."""
    h = Harness(None, bake_s=600)
    await h.traffic(40)  # the old champion's live figures: always right
    h.engine.champions["loans-approval"] = served("1", Constant(0))  # it goes wrong (the concept changed)
    unlabelled = []
    for i in range(80, 120):
        record = application(i)
        _, logged = h.engine.score("loans-approval", [record])
        unlabelled.append((logged, truth(record)))
    h.candidate = served("2", RichApproved())
    await h.engine.use_champion(
        ChampionChanged(model_name="loans-approval", version="2", action="promote", actor="ops", previous_version="1")
    )
    for logged, label in unlabelled:  # the old champion's answers, labelled only now
        h.engine.on_labelled(labelled(logged, label))
    await h.traffic(40, start=40)
    for _ in range(3):
        await asyncio.sleep(0)
    assert h.rolled_back == [] and h.engine.champions["loans-approval"].version == "2"


async def test_the_bake_period_is_rebuilt_from_a_recent_promotion_in_the_log() -> None:
    h = Harness(None, bake_s=600)
    h.engine.champions["loans-approval"] = served("2", Constant(0))
    baseline = {"requests": 50, "labelled": 40, "correct": 40}
    h.engine.rearm(RolloutLog.fold([stepped("promoted", champion="1", figures={"champion": baseline})]))
    await h.traffic(40)
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(h.rolled_back) == 1


async def test_the_prediction_log_waits_for_room_and_counts_alerts_what_it_cannot_log() -> None:
    published: list[Event] = []
    gate = asyncio.Event()

    async def slow_publish(event: Event) -> None:
        await gate.wait()
        published.append(event)

    log = PredictionLog(slow_publish, capacity=2, wait_s=0.05, alert_every_s=0)
    h = Harness(None)
    await h.traffic(5)
    entries = h.log
    await log.record(entries[:2])  # fits
    await log.record(entries[2:])  # no room for 3 within the wait: counted and alerted
    assert log.dropped == 3 and log.queue.qsize() == 2
    drain = asyncio.create_task(log.drain())
    gate.set()
    await asyncio.sleep(0.05)
    drain.cancel()
    alerts = [e for e in published if isinstance(e, AlertRaised)]
    assert len(alerts) == 1 and alerts[0].kind == "prediction_log_dropped" and "3 predictions" in alerts[0].message
    assert len([e for e in published if isinstance(e, PredictionMade)]) == 2


async def test_back_pressure_lets_every_prediction_through_when_the_log_catches_up() -> None:
    published: list[Event] = []

    async def publish(event: Event) -> None:
        await asyncio.sleep(0.001)
        published.append(event)

    log = PredictionLog(publish, capacity=3, wait_s=5.0)
    drain = asyncio.create_task(log.drain())
    h = Harness(None)
    await h.traffic(30)
    for entry in h.log:
        await log.record([entry])
    await asyncio.sleep(0.2)
    drain.cancel()
    assert log.dropped == 0 and len(published) == 30


async def test_a_partly_written_log_batch_is_retried_for_what_was_not_written_alone() -> None:
    calls: list[list[Event]] = []

    async def publish_many(events: list[Event]) -> None:
        calls.append(list(events))
        if len(calls) == 1:  # the first try writes all but the last two
            raise PublishFailed(events[-2:], RuntimeError("a partition's leader moved"))

    async def single(event: Event) -> None:
        raise AssertionError("a batch goes through publish_many")

    log = PredictionLog(single, capacity=100, wait_s=1.0, publish_many=publish_many)
    h = Harness(None)
    await h.traffic(6)
    await log.record(h.log)
    drain = asyncio.create_task(log.drain())
    await asyncio.sleep(0.6)  # the retry backs off 0.4 s
    drain.cancel()
    assert [len(c) for c in calls] == [6, 2] and calls[1] == h.log[-2:]
    assert log.dropped == 0


async def test_a_replica_holds_the_candidate_of_a_rollout_run_elsewhere_and_promotes_it_without_a_load() -> None:
    h = Harness(served("2", RichApproved()))
    loads = 0
    load = h.engine._load

    async def counted(name: str, version: str) -> ServedModel | None:
        nonlocal loads
        loads += 1
        return await load(name, version)

    h.engine._load = counted
    await h.engine.prefetch(stepped("started"))
    await h.engine.prefetch(stepped("started"))  # heard twice (a redelivery): loaded once
    assert loads == 1
    await h.engine.use_champion(
        ChampionChanged(model_name="loans-approval", version="2", action="promote", actor="ops", previous_version="1")
    )
    assert loads == 1 and h.engine.champions["loans-approval"].version == "2"


async def test_a_prefetched_candidate_is_let_go_when_its_rollout_ends_without_it() -> None:
    h = Harness(served("2", RichApproved()))
    await h.engine.prefetch(stepped("started"))
    await h.engine.prefetch(stepped("rolled_back"))
    assert h.engine.prefetched_version("loans-approval") is None
    h.candidate = RuntimeError("artifact gone")
    await h.engine.prefetch(stepped("started"))  # a candidate that fails to load is only logged here
    assert h.engine.prefetched_version("loans-approval") is None


async def test_a_replica_that_serves_no_model_yet_fetches_a_rollouts_candidate_and_lets_it_go_if_never_asked() -> None:
    h = Harness(served("2", RichApproved()))
    h.engine.champions.clear()  # this replica has answered nothing for the model yet
    await h.engine.prefetch(stepped("started"))
    assert h.engine.prefetched_version("loans-approval") == "2"
    h.engine.forget_miss("loans-approval")  # the champion moved, and this replica still does not serve it
    assert h.engine.prefetched_version("loans-approval") is None


async def test_a_canary_run_by_one_replica_answers_its_share_of_every_replicas_traffic_and_is_judged_on_both() -> None:
    running = Harness(served("2", RichApproved()), champion=MostlyRight())
    other = Harness(served("2", RichApproved()), champion=MostlyRight())
    await running.engine.start_rollout(running.approve())
    heard = 0

    async def hear_steps() -> None:  # the other replica reads models.rollout as it is published
        nonlocal heard
        for step in running.rollout_events()[heard:]:
            await other.engine.prefetch(step)
            await running.engine.prefetch(step)  # the running replica hears its own steps too: no change
        heard = len(running.rollout_events())

    await hear_steps()
    assert running.engine.elsewhere.version("loans-approval") is None
    shares = []
    for batch in range(40):
        records = [application(i) for i in range(batch * 20, batch * 20 + 20)]
        ids = [f"other-{batch}-{i}" for i in range(20)]
        answers, logged = other.engine.score("loans-approval", records, ids)
        other.log.extend(logged)
        shares.append(sum(a.variant == "candidate" for a in answers) / len(answers))
        for entry, record in zip(logged, records, strict=True):  # the join sends the other's answers to the judge
            running.engine.on_labelled(labelled([entry], truth(record)))
        await running.traffic(5, start=batch * 5)
        await asyncio.sleep(0)
        await hear_steps()
        if running.promoted:
            break
    assert running.promoted == [("loans-approval", "2")], [e.reason for e in running.rollout_events()]
    assert {e.model_version for e in other.log} <= {"1", "2"}
    assert 0.1 < sum(shares[:3]) / 3 < 0.5, "the first step's quarter of the other replica's traffic"
    candidate = running.engine.driver.history[-1].figures["candidate"]
    assert candidate["labelled"] > candidate["requests"], "labels of both replicas' candidate answers judged"
    await other.engine.use_champion(
        ChampionChanged(model_name="loans-approval", version="2", action="promote", actor="ops", previous_version="1")
    )
    answers, _ = other.engine.score("loans-approval", [application(1)])
    assert answers[0].model_version == "2" and answers[0].variant == "champion"


async def test_a_followed_rollout_stops_routing_when_it_ends_or_the_champion_differs() -> None:
    h = Harness(served("2", RichApproved()))
    await h.engine.prefetch(stepped("stepped", step=2))  # heard of first at its last step: 100% candidate
    answers, _ = h.engine.score("loans-approval", [application(i) for i in range(20)])
    assert {a.variant for a in answers} == {"candidate"}
    await h.engine.prefetch(stepped("stepped", step=2, champion="0"))  # run against a champion not served here
    answers, _ = h.engine.score("loans-approval", [application(i) for i in range(20)])
    assert {a.variant for a in answers} == {"champion"}
    await h.engine.prefetch(stepped("stepped", step=2))
    await h.engine.prefetch(stepped("rolled_back", step=2))
    answers, _ = h.engine.score("loans-approval", [application(i) for i in range(20)])
    assert {a.variant for a in answers} == {"champion"} and h.engine.prefetched_version("loans-approval") is None


async def test_a_rollout_goes_to_the_replica_given_its_models_approvals_and_the_former_owner_follows_it() -> None:
    first, second = Harness(served("2", RichApproved())), Harness(served("2", RichApproved()))
    await first.engine.start_rollout(first.approve())
    [started] = first.rollout_events()
    await second.engine.prefetch(started)
    log = RolloutLog.fold([started])
    # a restarted replica that is not given the model's partition leaves the rollout to its owner
    assert await second.engine.resume(log, owns=lambda name: False) == []
    assert not second.engine.rollouts and second.engine.prefetched_version("loans-approval") == "2"
    # the group hands the model's approvals to the second replica: it resumes the rollout, the first follows it
    [resumed] = await second.engine.resume(log, owns=lambda name: True)
    assert resumed.action == "started" and "resumed" in resumed.reason
    assert await first.engine.resume(log, owns=lambda name: False) == []
    assert not first.engine.rollouts and first.engine.elsewhere.routing("loans-approval", "1") is not None
    assert "loans-approval" in second.engine.rollouts and second.engine.prefetched_version("loans-approval") is None
    answers, _ = first.engine.score("loans-approval", [application(i) for i in range(200)])
    assert 20 < sum(a.variant == "candidate" for a in answers) < 90, "the former owner still gives it its 25%"


async def test_a_label_read_by_the_subscriber_and_the_catch_up_is_credited_once() -> None:
    h = Harness(served("2", RichApproved()))
    await h.engine.start_rollout(h.approve())
    [answer], logged = h.engine.score("loans-approval", [application(1)], ["r-1"])
    joined = labelled(logged, truth(application(1)))
    h.engine.on_labelled(joined)
    assert h.engine.credit_missed(joined) is False
    figures = h.engine.rollouts["loans-approval"].figures[answer.variant]
    assert figures.labelled == 1


async def test_a_canary_steps_up_on_the_answers_other_replicas_gave_when_none_reach_the_replica_running_it() -> None:
    running = Harness(served("2", RichApproved()), champion=MostlyRight())
    other = Harness(served("2", RichApproved()), champion=MostlyRight())
    await running.engine.start_rollout(running.approve())
    heard = 0
    for batch in range(60):  # every request goes to the other replica, as behind a sticky load balancer
        for step in running.rollout_events()[heard:]:
            await other.engine.prefetch(step)
        heard = len(running.rollout_events())
        records = [application(i) for i in range(batch * 20, batch * 20 + 20)]
        _, logged = other.engine.score("loans-approval", records, [f"r-{batch}-{i}" for i in range(20)])
        for entry, record in zip(logged, records, strict=True):
            running.engine.on_labelled(labelled([entry], truth(record)))
        await asyncio.sleep(0)
        if running.promoted:
            break
    assert [e.action for e in running.rollout_events()][:4] == ["started", "stepped", "stepped", "promoted"]


async def test_a_rollout_decided_by_its_former_owner_during_a_handover_ends_on_the_new_one_too() -> None:
    h = Harness(served("2", RichApproved()))
    await h.engine.resume(RolloutLog.fold([stepped("started")]))  # taken over from another replica
    assert "loans-approval" in h.engine.rollouts
    await h.engine.prefetch(h.rollout_events()[-1])  # its own step: nothing changes
    assert "loans-approval" in h.engine.rollouts
    await h.engine.prefetch(stepped("rolled_back"))  # the former owner decided before it handed the model over
    assert not h.engine.rollouts and h.engine.elsewhere.routing("loans-approval", "1") is None
    redelivered = h.approve().model_copy(update={"producer": "registry"})
    assert await h.engine.start_rollout(redelivered) is None, "the redelivered approval starts nothing"


async def test_a_followed_rollout_not_heard_of_for_its_time_limit_is_let_go() -> None:
    h = Harness(served("2", RichApproved()))
    await h.engine.prefetch(stepped("stepped", step=2))
    assert h.engine.elsewhere.routing("loans-approval", "1") is not None
    h.engine.elsewhere.expire_s = 0.0  # its end was written while this replica was not reading
    assert h.engine.elsewhere.routing("loans-approval", "1") is None
    answers, _ = h.engine.score("loans-approval", [application(i) for i in range(20)])
    assert {a.variant for a in answers} == {"champion"}


async def test_a_resumed_rollouts_clock_runs_on_from_its_last_event() -> None:
    h = Harness(served("2", RichApproved()))
    last = stepped("stepped", step=1).model_copy(update={"elapsed_s": 500.0})
    await h.engine.resume(RolloutLog.fold([stepped("started"), last]))
    assert h.engine.rollouts["loans-approval"].elapsed_s >= 500.0
