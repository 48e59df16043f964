"""Registry: gates, and the registrar's decisions over an in-memory model store."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI
from faststream.kafka import TestKafkaBroker

from flywheel.common.auth import Credentials, Grant, bearer
from flywheel.common.kafka import DEADLETTERS, ExactlyOnce, create_broker
from flywheel.common.settings import KafkaSettings
from flywheel.registry.commanded import CommandHandler
from flywheel.registry.commands import CommandDesk, Unanswered, signature
from flywheel.registry.commands import reconcile as reconcile_commands
from flywheel.registry.http import create_router
from flywheel.registry.lineage import DECISION_EVENT
from flywheel.registry.modelstore import HISTORY, RECORDED_CHAMPION, STATUS, NotFound
from flywheel.registry.registrar import Registrar
from flywheel.registry.settings import RegistrySettings
from flywheel.registry.subscribers import register_subscribers
from flywheel.schemas import (
    ALERTS,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    REGISTRY_ANSWERS,
    REGISTRY_COMMANDS,
    TRAINING_COMPLETED,
    AlertRaised,
    ChampionChanged,
    Lineage,
    ModelTrained,
    RegistryCommand,
    RolloutStepped,
    utc_now,
)

SECRET = "the-registry-replicas-secret"
CREDENTIALS = Credentials(
    {
        "ann-operator-token": Grant(principal="ann", roles=frozenset({"operator"})),
        "serving-token": Grant(principal="serving", roles=frozenset({"operator"})),
        "ops-token": Grant(principal="ops", roles=frozenset({"operator"})),
        "a-producer-token": Grant(principal="feeder", roles=frozenset({"producer"})),
    }
)


class FakeStore:
    """The ModelStore's interface over dicts; the champion scores ``champion_score`` on any data."""

    def __init__(self, champion_score: float = 0.9) -> None:
        self.versions: dict[str, dict[str, SimpleNamespace]] = {}
        self.model_aliases: dict[str, dict[str, str]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.champion_score = champion_score
        self.unknown_runs: set[str] = set()

    def run_exists(self, run_id: str) -> bool:
        return run_id not in self.unknown_runs

    def aliases(self, name: str) -> dict[str, str]:
        return dict(self.model_aliases.get(name, {}))

    def version_for_run(self, name: str, run_id: str) -> str | None:
        return next((v for v, mv in self.versions.get(name, {}).items() if mv.run_id == run_id), None)

    def model_tags(self, name: str) -> dict[str, str]:
        if name not in self.versions:
            raise NotFound(f"no model {name!r} in the registry")
        return self.tags.setdefault(name, {})

    def version(self, name: str, version: str) -> SimpleNamespace:
        self.model_tags(name)
        if version not in self.versions[name]:
            raise NotFound(f"model {name!r} has no version {version!r}")
        return self.versions[name][version]

    def describe_version(self, mv: SimpleNamespace, aliases: dict[str, str]) -> dict[str, Any]:
        return {
            "version": mv.version,
            "status": mv.tags.get(STATUS),
            "aliases": sorted(a for a, v in aliases.items() if v == mv.version),
        }

    def describe(self, name: str) -> dict[str, Any]:
        self.model_tags(name)
        aliases = self.aliases(name)
        versions = [self.describe_version(mv, aliases) for mv in self.versions[name].values()]
        return {
            "name": name,
            "aliases": aliases,
            "versions": versions,
            "history": json.loads(self.model_tags(name).get(HISTORY, "[]")),
        }

    def eval_split(self, run_id: str, artifact: str, label: str):
        """An older run's random split (its trivial baseline, the majority class, scores 0.6, balanced 0.5)."""
        return pd.DataFrame({"x": [1.0] * 200}), pd.Series([0, 1, 1, 0, 1] * 40)

    def score_version(self, name, version, features, labels) -> dict[str, float]:
        return {"f1": self.champion_score, "accuracy": self.champion_score, "balanced_accuracy": self.champion_score}

    def register(self, name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
        versions = self.versions.setdefault(name, {})
        version = str(len(versions) + 1)
        versions[version] = SimpleNamespace(
            name=name, version=version, run_id=run_id, source=model_uri, tags=dict(tags)
        )
        return version

    def set_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        self.versions[name][version].tags.update(tags)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.model_aliases.setdefault(name, {})[alias] = version

    def delete_alias(self, name: str, alias: str) -> None:
        self.model_aliases.get(name, {}).pop(alias, None)

    def champions(self) -> list[tuple[str, dict[str, str], dict[str, str]]]:
        return [(name, self.aliases(name), dict(self.model_tags(name))) for name in self.versions]

    def status(self, name: str, version: str) -> str | None:
        try:
            return self.version(name, version).tags.get(STATUS, "unknown")
        except NotFound:
            return None

    def record_champion(self, name: str, version: str) -> None:
        self.model_tags(name)[RECORDED_CHAMPION] = version

    def record(self, name: str, entry: dict, keep: int) -> None:
        tags = self.model_tags(name)
        tags[HISTORY] = json.dumps([*json.loads(tags.get(HISTORY, "[]")), entry][-keep:])


def trained(score: float, name: str = "m", run: str = "r1") -> ModelTrained:
    """A run logged before out-of-time slices (its evidence: its own random split), scoring ``score``."""
    lineage = Lineage(
        dataset="loans",
        dataset_version="v1",
        code_version="c",
        model_spec="model",
        seed=1,
        label="approved",
        eval_artifact="eval/eval.parquet",
        causation_chain=["drift-1", "req-1"],
    )
    return ModelTrained(
        producer="training",
        model_name=name,
        run_id=run,
        model_uri=f"models:/m-{run}",
        metrics={"accuracy": score, "f1": score, "balanced_accuracy": score},
        lineage=lineage,
        duration_s=1.0,
    )


def collect(broker, topic: str) -> list[dict]:
    bodies: list[dict] = []

    @broker.subscriber(topic)
    async def on(body: dict) -> None:
        bodies.append(body)

    return bodies


@pytest.fixture
def wired():
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="registry-test")
    seen = {t.name: collect(broker, t.name) for t in (MODELS_APPROVED, MODELS_REJECTED, MODELS_CHAMPION, ALERTS)}
    return broker, seen


def registrar(broker, store: FakeStore, **settings: Any) -> tuple[Registrar, CommandDesk]:
    """A registrar reached the way Kafka reaches it, through its subscribers, and the desk its routes ask."""
    r = Registrar(store, catalog=None, settings=RegistrySettings(**settings))
    desk = CommandDesk(broker, timeout_s=5, secret=SECRET)
    register_subscribers(broker, r, CommandHandler(r, SECRET), desk, ExactlyOnce(), "registry-test")
    return r, desk


def routes(r: Registrar, desk: CommandDesk) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(create_router(r, desk, CREDENTIALS))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")


async def deliver(broker, *events: ModelTrained) -> None:
    for event in events:
        await broker.publish(event.to_bytes(), topic=TRAINING_COMPLETED.name)


async def test_the_first_passing_candidate_becomes_champion_directly(wired):
    broker, seen = wired
    store = FakeStore()
    registrar(broker, store)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95))
    assert store.aliases("m") == {"champion": "1"}
    [approval] = seen[MODELS_APPROVED.name]
    [changed] = seen[MODELS_CHAMPION.name]
    assert approval["champion_version"] is None and approval["causation_chain"][:2] == ["drift-1", "req-1"]
    assert (changed["reason"], changed["actor"], changed["causation_id"]) == (
        "first model",
        "registry",
        approval["event_id"],
    )


async def test_a_candidate_that_beats_the_champion_becomes_challenger_and_a_worse_one_is_rejected(wired):
    broker, seen = wired
    store = FakeStore(champion_score=0.9)
    registrar(broker, store)
    async with TestKafkaBroker(broker):
        third = trained(0.85, run="r3")
        await deliver(broker, trained(0.95, run="r1"), trained(0.92, run="r2"), third, third)  # third redelivered
    assert store.aliases("m") == {"champion": "1", "challenger": "2"}
    assert [a["champion_version"] for a in seen[MODELS_APPROVED.name]] == [None, "1"]
    [rejection] = seen[MODELS_REJECTED.name]
    assert rejection["failed_gates"] == ["beats_champion:balanced_accuracy"] and rejection["version"] == "3"
    assert store.versions["m"]["3"].tags[STATUS] == "rejected" and len(store.versions["m"]) == 3


async def test_a_champion_alias_moved_by_hand_is_followed_when_the_version_may_serve_and_put_back_when_not(wired):
    """An alias set in MLflow's UI or client: to an approved version, a champion move like any other (history,
    tags, ``models.champion`` with actor ``mlflow``); to a rejected one, put back with an alert."""
    broker, seen = wired
    store = FakeStore(champion_score=0.9)
    r, desk = registrar(broker, store)
    handler = CommandHandler(r, SECRET)

    async def reconcile() -> list[str]:  # what the poller and the webhook do: a command per model moved by hand
        moved = handler.moved_by_hand()
        await reconcile_commands(moved, desk, seen_by="reconciler")
        return moved

    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"), trained(0.92, run="r2"), trained(0.5, run="r3"))
        assert await reconcile() == []  # nothing moved by hand
        store.set_alias("m", "champion", "2")  # MlflowClient().set_registered_model_alias("m", "champion", "2")
        assert await reconcile() == ["m"]
        assert await reconcile() == []
        store.set_alias("m", "champion", "3")  # v3 was rejected
        assert await reconcile() == ["m"]
    followed = ChampionChanged.model_validate(seen[MODELS_CHAMPION.name][-1])
    alert = AlertRaised.model_validate(seen[ALERTS.name][-1])
    assert followed.version == "2" and followed.previous_version == "1" and followed.actor == "mlflow"
    assert "seen by the reconciler" in followed.reason
    assert store.aliases("m") == {"champion": "2", "previous": "1"}  # challenger 2 is champion now
    assert alert.kind == "champion_alias" and "v3 is rejected" in alert.message and "put back to v2" in alert.message
    assert seen[ALERTS.name][-1]["dedup_key"] == "champion_alias:m"
    history = json.loads(store.model_tags("m")[HISTORY])
    assert [(h["action"], h["version"], h["actor"]) for h in history[-2:]] == [
        ("promote", "2", "mlflow"),
        ("alias_put_back", "2", "registry"),
    ]


async def test_manual_approval_holds_a_candidate_until_approved_over_http(wired):
    broker, seen = wired
    store = FakeStore()
    auth = bearer("ann-operator-token")
    http = routes(*registrar(broker, store, manual_approval=True))
    async with TestKafkaBroker(broker), http:
        await deliver(broker, trained(0.95))
        assert store.aliases("m") == {} and seen[MODELS_APPROVED.name] == []
        assert (await http.post("/models/m/versions/1/approve", json={"actor": "ann"})).status_code == 401
        approved = await http.post("/models/m/versions/1/approve", json={"actor": "ann"}, headers=auth)
        again = await http.post("/models/m/versions/1/approve", json={"actor": "ann"}, headers=auth)
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert again.status_code == 409 and "not awaiting approval" in again.json()["detail"]
    assert store.aliases("m") == {"champion": "1"} and store.versions["m"]["1"].tags["flywheel.approved_by"] == "ann"
    assert len(seen[MODELS_CHAMPION.name]) == 1


async def test_promote_keeps_the_previous_champion_and_rollback_restores_it(wired):
    broker, seen = wired
    store = FakeStore(champion_score=0.5)
    http = routes(*registrar(broker, store))
    async with TestKafkaBroker(broker), http:
        challenger, step = trained(0.96, run="r2"), uuid.uuid4()  # step: the rollout's promoted step
        await deliver(broker, trained(0.95, run="r1"), challenger)
        unknown_token = await http.post("/models/m/promote", json={"version": "2"}, headers=bearer("x"))
        forbidden = await http.post("/models/m/promote", json={"version": "2"}, headers=bearer("a-producer-token"))
        # the history names the token's principal: a body's "actor" is not believed
        body = {"version": "2", "actor": "mallory", "reason": "canary ok", "causation_id": str(step)}
        promoted = await http.post("/models/m/promote", json=body, headers=bearer("serving-token"))
        rolled = await http.post("/models/m/rollback", json={"reason": "worse"}, headers=bearer("ops-token"))
        nothing = await http.post("/models/m/rollback", json={}, headers=bearer("ops-token"))
        unknown = await http.get("/models/zzz")
    assert unknown_token.status_code == 401 and forbidden.status_code == 403
    assert promoted.json()["aliases"] == {"champion": "2", "previous": "1"}
    assert rolled.json()["aliases"] == {"champion": "1"}
    assert nothing.status_code == 409 and unknown.status_code == 404
    moves = [(c["action"], c["version"], c["previous_version"], c["actor"]) for c in seen[MODELS_CHAMPION.name]]
    assert moves == [
        ("promote", "1", None, "registry"),
        ("promote", "2", "1", "serving"),
        ("rollback", "1", "2", "ops"),
    ]
    assert [h["actor"] for h in rolled.json()["history"]] == ["registry", "serving", "ops"]
    # serving's promotion is a link of v2's loop: caused by the rollout's promoted step, in v2's correlation
    by_serving = seen[MODELS_CHAMPION.name][1]
    assert by_serving["causation_id"] == str(step)
    assert by_serving["correlation_id"] == str(challenger.correlation_id)


async def test_a_transient_registry_failure_is_retried_and_the_candidate_registered_once(wired):
    broker, seen = wired
    store = FakeStore()
    failures = iter([RuntimeError("MLflow 503")])
    register = store.register

    def flaky_register(*args: Any) -> str:
        if (error := next(failures, None)) is not None:
            raise error
        return register(*args)

    store.register = flaky_register  # type: ignore[method-assign]
    registrar(broker, store)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95))
    assert list(store.versions["m"]) == ["1"] and store.aliases("m") == {"champion": "1"}
    assert len(seen[MODELS_APPROVED.name]) == 1 and len(seen[MODELS_CHAMPION.name]) == 1


async def test_a_permanent_registry_failure_lands_on_deadletters_with_the_reason(wired):
    broker, _ = wired
    store = FakeStore()

    def broken(*args: Any) -> str:
        raise RuntimeError("MLflow is gone")

    store.register = broken  # type: ignore[method-assign]
    letters = collect(broker, DEADLETTERS.name)
    registrar(broker, store)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95))
    [letter] = letters
    assert letter["source_topic"] == TRAINING_COMPLETED.name and "MLflow is gone" in letter["reason"]
    assert letter["attempts"] == KafkaSettings().dead_letter_attempts


async def test_a_completion_of_a_run_mlflow_does_not_know_is_dead_lettered_never_registered(wired):
    broker, seen = wired
    store = FakeStore()
    store.unknown_runs.add("gone")
    letters = collect(broker, DEADLETTERS.name)
    registrar(broker, store)
    poison = trained(0.95, name="no-such-model", run="gone")
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"), poison, trained(0.96, run="r1"), trained(0.97, run="r2"))
    [letter] = letters
    assert "run 'gone' of model 'no-such-model' is not in MLflow" in letter["reason"] and letter["attempts"] == 1
    assert base64.b64decode(letter["original_value"]) == poison.to_bytes()
    assert "no-such-model" not in store.versions, "a run that does not exist is never a registered version"
    assert list(store.versions["m"]) == ["1", "2"] and {a["version"] for a in seen[MODELS_APPROVED.name]} == {"1", "2"}


async def test_a_redelivery_after_a_restart_finishes_an_interrupted_decision_with_the_same_event_ids(wired):
    broker, seen = wired
    store = FakeStore()
    candidate = trained(0.95)
    registrar(broker, store)
    async with TestKafkaBroker(broker):
        await deliver(broker, candidate)
    first = [e["event_id"] for e in seen[MODELS_APPROVED.name] + seen[MODELS_CHAMPION.name]]
    # a new process (empty memory) gets the same message again: the same decision, the same ids
    broker2 = create_broker(KafkaSettings(retry_backoff_s=0), service="registry-test")
    again = {t.name: collect(broker2, t.name) for t in (MODELS_APPROVED, MODELS_CHAMPION)}
    registrar(broker2, store)
    async with TestKafkaBroker(broker2):
        await deliver(broker2, candidate)
    assert [e["event_id"] for e in again[MODELS_APPROVED.name] + again[MODELS_CHAMPION.name]] == first
    assert list(store.versions["m"]) == ["1"]
    # a crash between registering and accepting: the redelivery accepts it
    interrupted = trained(0.97, run="r9")
    store.register("m", "models:/m-r9", "r9", {STATUS: "approved", "flywheel.champion_at_gate": "1"})
    broker3 = create_broker(KafkaSettings(retry_backoff_s=0), service="registry-test")
    approvals = collect(broker3, MODELS_APPROVED.name)
    registrar(broker3, store)
    async with TestKafkaBroker(broker3):
        await deliver(broker3, interrupted)
    assert [(a["version"], a["run_id"]) for a in approvals] == [("2", "r9")]
    assert store.aliases("m") == {"champion": "1", "challenger": "2"}


def rollout(action: str, version: str, champion: str = "1", reason: str = "accuracy 0.61 vs champion 0.70") -> bytes:
    return RolloutStepped(
        producer="serving",
        model_name="m",
        candidate_version=version,
        champion_version=champion,
        strategy="canary",
        action=action,
        reason=reason,
    ).to_bytes()


async def test_a_rolled_back_challenger_loses_the_alias_and_is_marked_rolled_back_once_with_the_reason(wired):
    broker, seen = wired
    store = FakeStore(champion_score=0.5)
    registrar(broker, store)
    letters = collect(broker, DEADLETTERS.name)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"), trained(0.96, run="r2"))
        stepped, rolled = rollout("stepped", "2"), rollout("rolled_back", "2")
        for message in (stepped, rolled, rolled, rollout("rolled_back", "9")):  # rolled back redelivered
            await broker.publish(message, topic=MODELS_ROLLOUT.name)
    assert store.aliases("m") == {"champion": "1"}
    tags = store.versions["m"]["2"].tags
    assert (tags[STATUS], tags["flywheel.rolled_back_by"], tags["flywheel.rollback_reason"]) == (
        "rolled_back",
        "serving",
        "accuracy 0.61 vs champion 0.70",
    )
    history = json.loads(store.tags["m"][HISTORY])
    assert [(h["action"], h["version"], h["previous"]) for h in history] == [
        ("promote", "1", None),
        ("rolled_back", "2", "1"),
    ]
    assert len(seen[MODELS_CHAMPION.name]) == 1, "a rolled-back challenger does not move the champion"
    [letter] = letters
    assert "m v9, which the registry does not hold" in letter["reason"]


async def test_an_inconclusive_or_aborted_rollout_ends_the_challenger_and_says_why(wired):
    broker, _ = wired
    store = FakeStore(champion_score=0.5)
    registrar(broker, store)
    letters = collect(broker, DEADLETTERS.name)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"), trained(0.96, run="r2"))
        undecided = rollout("inconclusive", "2", reason="no significant difference in 3600 s")
        for message in (undecided, undecided, rollout("aborted", "9", reason="candidate failed to load")):
            await broker.publish(message, topic=MODELS_ROLLOUT.name)
        assert store.aliases("m") == {"champion": "1"}
        tags = store.versions["m"]["2"].tags
        assert (tags[STATUS], tags["flywheel.rollout_end_reason"]) == (
            "inconclusive",
            "no significant difference in 3600 s",
        )
        await deliver(broker, trained(0.97, run="r3"), trained(0.98, run="r4"))
        await broker.publish(rollout("aborted", "3", reason="superseded by version 4"), topic=MODELS_ROLLOUT.name)
    assert store.aliases("m") == {"champion": "1", "challenger": "4"}, "the newer candidate keeps its alias"
    assert store.versions["m"]["3"].tags[STATUS] == "aborted"
    history = json.loads(store.tags["m"][HISTORY])
    assert [(h["action"], h["version"]) for h in history] == [("promote", "1"), ("inconclusive", "2"), ("aborted", "3")]
    assert letters == [], "an aborted rollout of a version the registry never held is no error"


async def test_a_late_rollback_leaves_a_newer_challenger_and_a_champion_rollback_marks_the_old_champion(wired):
    broker, _ = wired
    store = FakeStore(champion_score=0.5)
    _, desk = registrar(broker, store)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"), trained(0.96, run="r2"), trained(0.97, run="r3"))
        await broker.publish(rollout("rolled_back", "2"), topic=MODELS_ROLLOUT.name)  # v3 is challenger now
        assert store.aliases("m") == {"champion": "1", "challenger": "3"}
        assert store.versions["m"]["2"].tags[STATUS] == "rolled_back"
        assert (await desk.ask(command("promote", "3", reason="canary healthy"))).status == 200
        assert (await desk.ask(command("rollback", reason="bake period: accuracy fell"))).status == 200
    assert store.aliases("m") == {"champion": "1"}
    assert store.versions["m"]["3"].tags[STATUS] == "rolled_back"
    assert store.versions["m"]["3"].tags["flywheel.rollback_reason"] == "bake period: accuracy fell"


async def test_another_completion_of_a_decided_run_publishes_nothing_again(wired):
    broker, seen = wired
    store = FakeStore()
    registrar(broker, store)
    first = trained(0.95)
    repeat = first.model_copy(update={"event_id": uuid.uuid4()})  # training answered a repeat with the same run
    async with TestKafkaBroker(broker):
        await deliver(broker, first, repeat)
    assert list(store.versions["m"]) == ["1"] and store.aliases("m") == {"champion": "1"}
    assert len(seen[MODELS_APPROVED.name]) == 1 and len(seen[MODELS_CHAMPION.name]) == 1


def signed(command: RegistryCommand, expires_in_s: float) -> RegistryCommand:
    command = command.model_copy(update={"expires_at": utc_now() + timedelta(seconds=expires_in_s)})
    return command.model_copy(update={"signature": signature(SECRET, command)})


def command(action: str, version: str | None = None, name: str = "m", reason: str = "") -> RegistryCommand:
    return RegistryCommand(
        producer="serving", model_name=name, action=action, version=version, actor="serving", reason=reason
    )


async def test_commands_answer_what_http_would_and_a_redelivered_one_repeats_its_move_with_the_same_id(wired):
    """A crash after the move, before the commit: the command comes again, finds its move in the history and
    answers 200 with the same event (consumers dedup it), not 409 "already the champion"."""
    broker, seen = wired
    store = FakeStore(champion_score=0.5)
    _, desk = registrar(broker, store)
    answers = collect(broker, REGISTRY_ANSWERS.name)
    promote = signed(command("promote", "2", reason="canary healthy"), expires_in_s=60)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"), trained(0.96, run="r2"), trained(0.5, run="r3"))
        # the second: a new process's redelivery (no memory of the first)
        first = await CommandHandler(Registrar(store, None, RegistrySettings()), SECRET).on_command(promote)
        # redelivered after its asker gave up (a restart and a rebalance take longer): done, so said again
        late_again = promote.model_copy(update={"expires_at": utc_now() - timedelta(seconds=1)})
        late_again = late_again.model_copy(update={"signature": signature(SECRET, late_again)})
        again = await CommandHandler(Registrar(store, None, RegistrySettings()), SECRET).on_command(late_again)
        await broker.publish(late_again.to_bytes(), topic=REGISTRY_COMMANDS.name)
        refused = {
            "gone": await desk.ask(command("promote", "7")),
            "rejected": await desk.ask(command("promote", "3")),
            "twice": await desk.ask(command("promote", "2")),
            "unknown": await desk.ask(command("rollback", name="zzz")),
            "held": await desk.ask(command("approve", "2")),
        }
        late = signed(command("rollback"), expires_in_s=-1)
        await broker.publish(late.to_bytes(), topic=REGISTRY_COMMANDS.name)
    assert {k: a.status for k, a in refused.items()} == {
        "gone": 404,
        "rejected": 409,
        "twice": 409,
        "unknown": 404,
        "held": 409,
    }
    assert "rejected; only approved versions" in refused["rejected"].detail
    assert store.aliases("m") == {"champion": "2", "previous": "1"}, "the late rollback was not carried out"
    assert [a["status"] for a in answers if a["command_id"] == str(late.event_id)] == [503]
    assert [e.event_id for e in first] == [e.event_id for e in again] and [type(e).__name__ for e in first] == [
        "ChampionChanged",
        "RegistryAnswered",
    ]
    assert first[1].status == again[1].status == 200
    [published] = [c for c in seen[MODELS_CHAMPION.name] if c["action"] == "promote" and c["version"] == "2"]
    assert published["event_id"] == str(first[0].event_id), "a redelivered command repeats its move's id"
    history = json.loads(store.tags["m"][HISTORY])
    assert [h["command_id"] for h in history if h.get("command_id")] == [str(promote.event_id)]


async def test_a_command_desk_waits_no_longer_than_its_timeout(wired):
    broker, _ = wired
    desk = CommandDesk(broker, timeout_s=0.1, secret=SECRET)  # no registry consumer: nobody answers
    async with TestKafkaBroker(broker):
        with pytest.raises(Unanswered, match="never carried out later"):
            await desk.ask(command("rollback"))


async def test_a_message_of_another_type_on_registry_commands_is_dead_lettered(wired):
    broker, _ = wired
    letters = collect(broker, DEADLETTERS.name)
    registrar(broker, FakeStore())
    async with TestKafkaBroker(broker):
        await broker.publish(trained(0.9).to_bytes(), topic=REGISTRY_COMMANDS.name)
    [letter] = letters
    assert letter["source_topic"] == REGISTRY_COMMANDS.name and "RegistryCommand" in letter["reason"]


async def test_a_command_not_signed_by_a_registry_replica_is_dead_lettered_and_moves_nothing(wired):
    """Kafka is open to the stack's network: a forged promote (or one signed with another secret) is refused."""
    broker, _seen = wired
    letters = collect(broker, DEADLETTERS.name)
    store = FakeStore(champion_score=0.5)
    registrar(broker, store)
    forged = command("promote", "2", reason="mallory says so")
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"), trained(0.96, run="r2"))
        await broker.publish(forged.to_bytes(), topic=REGISTRY_COMMANDS.name)
        wrong = forged.model_copy(update={"signature": signature("another-secret", forged)})
        await broker.publish(wrong.to_bytes(), topic=REGISTRY_COMMANDS.name)
    assert store.aliases("m") == {"champion": "1", "challenger": "2"}
    assert [letter["source_topic"] for letter in letters] == [REGISTRY_COMMANDS.name] * 2
    assert all("not signed by a registry replica" in letter["reason"] for letter in letters)


async def test_a_move_cut_short_after_its_alias_is_finished_by_the_retry_not_refused(wired):
    """MLflow fails after the champion alias moved (history and recorded champion not yet written): the
    retry finishes the same move, as the command's, and answers 200."""
    broker, seen = wired
    store = FakeStore(champion_score=0.5)
    _, desk = registrar(broker, store)
    failures = iter([RuntimeError("MLflow 503")])
    record = store.record

    def flaky_record(*args: Any) -> None:
        if (error := next(failures, None)) is not None:
            raise error
        record(*args)

    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95, run="r1"), trained(0.96, run="r2"))
        store.record = flaky_record  # type: ignore[method-assign]
        answered = await desk.ask(command("promote", "2", reason="canary healthy"))
    assert answered.status == 200, answered.detail
    assert store.aliases("m") == {"champion": "2", "previous": "1"} and store.tags["m"][RECORDED_CHAMPION] == "2"
    last = seen[MODELS_CHAMPION.name][-1]
    assert (last["version"], last["previous_version"], last["actor"]) == ("2", "1", "serving")


async def test_a_redelivered_approval_repeats_its_events_with_the_same_ids(wired):
    broker, _seen = wired
    store = FakeStore()
    r, _ = registrar(broker, store, manual_approval=True)
    approve = signed(command("approve", "1", reason="reviewed"), expires_in_s=60)
    async with TestKafkaBroker(broker):
        await deliver(broker, trained(0.95))
        first = await CommandHandler(r, SECRET).on_command(approve)
        again = await CommandHandler(r, SECRET).on_command(approve)
    assert [type(e).__name__ for e in first] == ["ModelApproved", "ChampionChanged", "RegistryAnswered"]
    assert [e.model_dump(exclude={"occurred_at"}) for e in first] == [
        e.model_dump(exclude={"occurred_at"}) for e in again
    ]
    assert store.versions["m"]["1"].tags[DECISION_EVENT] == str(first[0].event_id), "lineage finds the approval"
