"""Poison on every topic a service consumes, with good messages around it.

For each consumed topic (read from the services' own AsyncAPI documents) the test sends, all
with one key so they share a partition and its order: a good message twice (a duplicate), then
unparseable bytes, an empty message, JSON of the wrong shape, a 900 KB message, and
well-formed events with absurd values (NaN, 1e308, a 10,000-character string, an unknown
dataset or model), then a good message again.

What must hold:

- every consumer group of the topic commits past the last good message: alive, caught up
  (the 900 KB message is the last poison, so a consumer it stops has judged all the others);
- every bad message is on ``deadletters`` once per consumer group, with a reason and its exact
  bytes; a well-formed event with absurd values may instead be refused by the service's own
  rejection event in the same loop (same ``correlation_id``): ``records.rejected``,
  ``training.failed``, ``models.rejected``, or an aborted/rolled back rollout;
- a duplicate has one effect (records, prediction requests: one output per logical id).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from flywheel.common.kafka import client_security
from flywheel.common.settings import KafkaSettings
from flywheel.registry.commands import signature
from flywheel.schemas import (
    DEADLETTERS,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    PREDICTIONS,
    RECORDS_REJECTED,
    RECORDS_VALIDATED,
    REGISTRY_ANSWERS,
    TOPICS,
    TRAINING_FAILED,
    RegistryCommand,
)
from infra.launcher.credentials import registry_command_secret
from tests.reliability.traffic import SharedModel, consumed_topics, drain, report, skip_past, ungrouped
from tests.support import stack
from tests.support.kafka import TopicReader, producer
from tests.unit.test_ingestion_kafka import loan

pytestmark = [pytest.mark.usefixtures("topics"), pytest.mark.timeout(300)]

NAN, HUGE, LONG = float("nan"), 1e308, "x" * 10_000
# A subscriber without a consumer group (every replica hears every message) commits nothing: that it
# dead-lettered the last poison (900 KB) is what shows it went on.
REJECTIONS = {
    RECORDS_REJECTED.name: lambda e: True,
    TRAINING_FAILED.name: lambda e: True,
    MODELS_REJECTED.name: lambda e: True,
    MODELS_ROLLOUT.name: lambda e: e["action"] in ("aborted", "rolled_back"),
    REGISTRY_ANSWERS.name: lambda e: e["status"] != 200,  # a command refused (404, 409) is answered, not lettered
}


@dataclass
class Sent:
    topic: str
    kind: str
    value: bytes
    bad: bool
    correlation_id: str | None = None
    offset: int = -1
    dead: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    refused: list[dict] = field(default_factory=list)


def envelope(event_type: str, correlation: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": "1.0",
        "occurred_at": datetime.now(UTC).isoformat(),
        "producer": "reliability",
        "correlation_id": correlation,
        **fields,
    }


def good_and_absurd(topic: str, tag: str, model: str, champion: str) -> tuple[dict, list[tuple[str, dict]]]:
    """A good event of the topic's type, and well-formed events with absurd values."""
    applicant = f"{tag}-ok"
    record = loan(applicant_id=applicant)
    manifest = {
        "dataset": "loans",
        "version": f"{tag}-v",
        "content_hash": "h",
        "row_count": 1,
        "columns": {},
        "uri": "",
    }
    kinds: dict[str, tuple[dict, list[tuple[str, dict]]]] = {
        "datasets.versioned": (
            {"dataset": "loans", "version": f"{tag}-v", "manifest": manifest},
            [
                ("NaN row count", {"manifest": {**manifest, "row_count": NAN}}),
                ("1e308 row count", {"manifest": {**manifest, "row_count": HUGE}}),
                ("10k-char version", {"version": LONG}),
                ("unknown dataset", {"dataset": "no-such-dataset"}),
            ],
        ),
        "records.raw": (
            {"dataset": "loans", "record_id": applicant, "data": record},
            [
                ("NaN salary", {"data": {**record, "salary": NAN}}),
                ("1e308 salary", {"data": {**record, "salary": HUGE}}),
                ("10k-char category", {"data": {**record, "elevel": LONG}}),
                ("unknown dataset", {"dataset": "no-such-dataset"}),
            ],
        ),
        "records.validated": (
            {
                "dataset": "loans",
                "record_id": applicant,
                "entity_id": applicant,
                "event_time": record["applied_at"],
                "data": record,
                "contract_version": "1.0",
            },
            [
                ("NaN salary", {"data": {**record, "salary": NAN}}),
                ("1e308 salary", {"data": {**record, "salary": HUGE}}),
                ("10k-char category", {"data": {**record, "elevel": LONG}}),
                ("unknown dataset", {"dataset": "no-such-dataset"}),
            ],
        ),
        "features.online": (
            {
                "dataset": "loans",
                "feature_set": "loans_features",
                "feature_set_version": "poison",
                "entity_id": applicant,
                "event_time": record["applied_at"],
                "values": {"salary": record["salary"]},
                "inputs": record,
            },
            [
                ("NaN feature", {"entity_id": f"{tag}-nan", "values": {"salary": NAN}}),
                ("1e308 salary", {"entity_id": f"{tag}-huge", "inputs": {**record, "salary": HUGE}}),
                ("10k-char category", {"entity_id": f"{tag}-long", "inputs": {**record, "elevel": LONG}}),
                ("unknown dataset", {"dataset": "no-such-dataset"}),
            ],
        ),
        "labels": (
            {"dataset": "loans", "label": 1, "prediction_id": f"{tag}-p", "entity_id": applicant},
            [
                ("NaN label", {"label": NAN}),
                ("1e308 label", {"label": HUGE}),
                ("10k-char label", {"label": LONG}),
                ("unknown dataset", {"dataset": "no-such-dataset"}),
            ],
        ),
        "predictions": (
            {
                "dataset": "loans",
                "prediction_id": f"{tag}-p",
                "entity_id": applicant,
                "model_name": model,
                "model_version": champion,
                "variant": "champion",
                "prediction": 1,
                "probability": 0.9,
                "features": {"salary": 50_000.0},
                "latency_ms": 1.0,
            },
            [
                ("NaN latency", {"latency_ms": NAN}),
                ("1e308 probability", {"probability": HUGE}),
                ("10k-char variant", {"variant": LONG}),
                ("unknown model", {"model_name": "no-such-model", "dataset": "no-such-dataset"}),
            ],
        ),
        "predictions.labelled": (  # read by monitoring (its group) and by every serving replica
            {
                "dataset": "loans",
                "model_name": model,
                "label": 1,
                "label_event_id": str(uuid.uuid4()),
                "entity_id": applicant,
                "answers": [
                    {
                        "prediction_id": f"{tag}-p",
                        "variant": "champion",
                        "model_version": champion,
                        "prediction": 1,
                        "predicted_at": datetime.now(UTC).isoformat(),
                    }
                ],
            },
            [
                ("NaN label", {"label": NAN}),
                ("1e308 label", {"label": HUGE}),
                ("10k-char model", {"model_name": LONG}),
                ("unknown dataset", {"dataset": "no-such-dataset"}),
            ],
        ),
        "predictions.requests": (
            {
                "dataset": "loans",
                "request_id": f"{tag}-ok",
                "entity_id": applicant,
                "data": record,
                "model_name": model,
            },
            [
                ("NaN salary", {"data": {**record, "salary": NAN}}),
                ("1e308 salary", {"data": {**record, "salary": HUGE}}),
                ("10k-char category", {"data": {**record, "elevel": LONG}}),
                ("unknown model", {"model_name": "no-such-model"}),
            ],
        ),
        "training.requested": (
            None,  # a good request trains a model: the absurd ones must each be refused instead
            [
                ("NaN param", {"dataset": "loans", "params": {"learning_rate": NAN}}),
                ("1e308 param", {"dataset": "loans", "params": {"max_iter": HUGE}}),
                ("10k-char model name", {"dataset": "loans", "model_name": LONG}),
                ("unknown dataset", {"dataset": "no-such-dataset"}),
            ],
        ),
        "monitoring.drift": (
            {"dataset": "loans", "model_name": model, "kind": "data", "window_size": 10, "retrain": False},
            [
                ("NaN window", {"window_size": NAN, "retrain": True}),
                ("1e308 window", {"window_size": HUGE, "retrain": True}),
                ("10k-char model", {"model_name": LONG, "retrain": True}),
                (
                    "unknown dataset and model",
                    {"dataset": "no-such-dataset", "model_name": "no-such-model", "retrain": True},
                ),
            ],
        ),
        "training.completed": (
            None,  # a good completion is a real run: the suite's model provides them
            [
                ("NaN metric", _trained(model, {"accuracy": NAN})),
                ("1e308 metric", _trained(model, {"accuracy": HUGE})),
                ("10k-char run id", {**_trained(model, {"accuracy": 0.9}), "run_id": LONG}),
                ("unknown model and run", _trained("no-such-model", {"accuracy": 0.9})),
            ],
        ),
        "models.approved": (
            {
                "model_name": model,
                "version": champion,
                "run_id": "",
                "model_uri": f"models:/{model}/{champion}",
                "metrics": {},
                "gates": [],
            },
            [
                ("NaN metric", {"version": "999", "metrics": {"accuracy": NAN}}),
                ("1e308 version", {"version": HUGE}),
                ("10k-char version", {"version": LONG}),
                ("unknown model", {"model_name": "no-such-model", "version": "1"}),
            ],
        ),
        "models.champion": (
            {"model_name": model, "version": champion, "action": "promote", "actor": "reliability"},
            [
                ("NaN version", {"version": NAN}),
                ("1e308 version", {"version": HUGE}),
                ("10k-char version", {"version": LONG}),
                ("unknown model", {"model_name": "no-such-model", "version": "1"}),
            ],
        ),
        "models.rejected": (  # read by monitoring: a candidate in vain lets a champion below its floor ask again
            {
                "model_name": model,
                "run_id": "reliability",
                "metrics": {},
                "gates": [],
                "failed_gates": ["reliability"],
                "version": champion,  # the champion's own version: nothing in vain, nothing to do
            },
            [
                ("NaN version", {"version": NAN}),
                ("1e308 version", {"version": HUGE}),
                ("10k-char version", {"version": LONG}),
                ("unknown model", {"model_name": "no-such-model", "version": "1"}),
            ],
        ),
        "models.rollout": (  # read by the registry, which writes down a rollout that ended with the champion kept
            {
                "model_name": model,
                "candidate_version": champion,
                "champion_version": champion,
                "strategy": "canary",
                "action": "aborted",  # ended, no step to resume; the registry leaves a champion's to its rollback
                "reason": "reliability: a good message",
            },
            [
                ("NaN version", {"action": "rolled_back", "candidate_version": NAN}),
                ("1e308 version", {"action": "rolled_back", "candidate_version": HUGE}),
                ("10k-char version", {"action": "rolled_back", "candidate_version": LONG}),
                ("unknown model", {"action": "rolled_back", "model_name": "no-such-model", "candidate_version": "1"}),
            ],
        ),
        "registry.commands": (  # read by the registry replica owning the model; a reconcile of a model moved by no one
            {"model_name": model, "action": "reconcile", "actor": "reliability"},
            [
                ("NaN version", {"action": "promote", "version": NAN}),
                ("1e308 version", {"action": "promote", "version": HUGE}),
                ("10k-char version", {"action": "promote", "version": LONG}),
                ("unknown model", {"action": "rollback", "model_name": "no-such-model"}),
            ],
        ),
        "registry.answers": (  # read by every registry replica: an answer to a command no one waits for
            {"model_name": model, "command_id": str(uuid.uuid4()), "status": 200},
            [
                ("NaN status", {"status": NAN}),
                ("1e308 status", {"status": HUGE}),
                ("10k-char model", {"model_name": LONG}),
                ("status 999", {"status": 999}),
            ],
        ),
    }
    good, absurd = kinds[topic]
    return good, absurd


def _trained(model: str, metrics: dict[str, float]) -> dict[str, Any]:
    run = uuid.uuid4().hex
    return {
        "model_name": model,
        "run_id": run,
        "model_uri": f"runs:/{run}/model",
        "metrics": metrics,
        "lineage": {
            "dataset": "loans",
            "dataset_version": "nope",
            "code_version": "x",
            "model_spec": "model",
            "seed": 1,
        },
        "duration_s": 1.0,
    }


def signed(topic: str, body: dict[str, Any]) -> dict[str, Any]:
    """A good registry command is signed by the registry replicas' secret (the stack's); an unsigned one is
    refused like any poison."""
    if topic != "registry.commands":
        return body
    command = RegistryCommand.model_validate(body)
    return {**body, "signature": signature(registry_command_secret(), command)}


def messages(topic: str, tag: str, model: str, champion: str) -> list[Sent]:
    """The sequence sent to one topic: good, its duplicate, the poison, good again."""
    event_type = TOPICS[topic].event.__name__
    good, absurd = good_and_absurd(topic, tag, model, champion)
    sent: list[Sent] = []

    def add(kind: str, value: bytes, bad: bool, correlation: str | None = None) -> None:
        sent.append(Sent(topic, kind, value, bad, correlation))

    if good is not None:
        first = json.dumps(signed(topic, envelope(event_type, str(uuid.uuid4()), **good))).encode()
        add("good", first, bad=False)
        add("good, duplicate", first, bad=False)
    add("not JSON", b"\x00\xff not json " + tag.encode(), bad=True)
    add("empty", b"", bad=True)
    add("JSON array", json.dumps([tag, 1, 2]).encode(), bad=True)
    add("another event's shape", json.dumps(envelope("AlertRaised", str(uuid.uuid4()), tag=tag)).encode(), bad=True)
    for kind, change in absurd:
        correlation = str(uuid.uuid4())
        body = {**(good or {}), **change}
        for own_id in ("record_id", "request_id", "prediction_id"):  # its own logical id: counts stay clean
            if own_id in body and own_id not in change:
                body[own_id] = f"{tag}-bad{len(sent)}"
        if topic == "training.requested":
            body.setdefault("model_name", f"{tag}-{len(sent)}")  # one model each: requests are not merged
        add(kind, json.dumps(envelope(event_type, correlation, **body)).encode(), bad=True, correlation=correlation)
    # last of the poison: a consumer that cannot dead-letter it stops here, and the rest was judged
    add("900 KB", json.dumps({"tag": tag, "padding": "x" * 900_000}).encode(), bad=True)
    if good is not None:
        again = {**good}
        if "record_id" in again and topic == "records.raw":
            correlation = str(uuid.uuid4())
            resent = json.dumps(envelope(event_type, correlation, **again)).encode()
            add("same record, new event id", resent, bad=True, correlation=correlation)  # refused as a duplicate
        if "request_id" in again:
            again["request_id"] = f"{tag}-ok2"
        after = signed(topic, envelope(event_type, str(uuid.uuid4()), **again))
        add("good, after", json.dumps(after).encode(), bad=False)
    return sent


async def committed_past(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> bool:
    admin = AIOKafkaAdminClient(**client_security(), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        done = (await admin.list_consumer_group_offsets(group, partitions=[tp])).get(tp)
    finally:
        await admin.close()
    return done is not None and done.offset > offset


async def test_poison_on_every_consumed_topic_is_dead_lettered_and_no_consumer_stops(
    kafka: KafkaSettings, model: SharedModel
):
    tag = f"rel-poison-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(timeout=10) as http:
        consumers = await consumed_topics(http, grouped_only=False)
        served = (await http.get(f"{stack.service_url('serving')}/models")).json()[model.name]
    readers_of: dict[str, list[str]] = defaultdict(list)
    for group, topics in consumers.items():
        for topic in topics:
            readers_of[topic].append(group.removeprefix("flywheel-"))
    plan = {topic: messages(topic, tag, model.name, served["champion_version"]) for topic in sorted(readers_of)}
    outputs = [DEADLETTERS, RECORDS_VALIDATED, PREDICTIONS, *(TOPICS[t] for t in REJECTIONS)]
    async with contextlib.AsyncExitStack() as opened:
        readers = {
            t.name: await opened.enter_async_context(TopicReader(kafka.bootstrap_servers, t.name)) for t in outputs
        }
        send = await producer(kafka.bootstrap_servers)
        try:
            for topic, sent in plan.items():
                for message in sent:  # one key: one partition, in this order
                    meta = await send.send_and_wait(topic, message.value, key=tag.encode())
                    message.offset = meta.offset
            partitions = {topic: TopicPartition(topic, meta.partition) for topic in plan}
        finally:
            await send.stop()

        # every consumer group commits past the last message of each topic: nothing wedged
        # (training's absurd requests each run until the fit refuses them: resolving a window of versions first)
        deadline = time.monotonic() + 150
        waiting = {(g, t) for t, groups in readers_of.items() for g in groups if not ungrouped(t, g)}
        while waiting and time.monotonic() < deadline:
            for group, topic in list(waiting):
                if await committed_past(
                    kafka.bootstrap_servers, f"flywheel-{group}", partitions[topic], plan[topic][-1].offset
                ):
                    waiting.discard((group, topic))
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # dead letters published just before a commit
        for reader in readers.values():
            await drain(reader, lambda _: False, 1, lambda b: True)
        # a consumer wedged on a message is repaired, so the stack is whole for what runs next
        stuck: dict[str, list[TopicPartition]] = defaultdict(list)
        for group, topic in waiting:
            stuck[group].append(partitions[topic])
        await skip_past(kafka.bootstrap_servers, stuck)

    by_bytes = {(m.topic, m.value): m for sent in plan.values() for m in sent}
    for letter in readers[DEADLETTERS.name].seen:
        value = base64.b64decode(letter.get("original_value") or "")
        message = by_bytes.get((letter.get("source_topic"), value))
        if message is not None:
            message.dead[letter.get("consumer_group") or "?"].append(letter)
    for name, accepts in REJECTIONS.items():
        for event in readers[name].seen:
            for message in (m for sent in plan.values() for m in sent):
                if message.correlation_id and event.get("correlation_id") == message.correlation_id and accepts(event):
                    message.refused.append(event)

    problems, lines = [], []
    for topic, sent in plan.items():
        groups = readers_of[topic]
        bad = [m for m in sent if m.bad]
        handled = [m for m in bad if all(len(m.dead[g]) == 1 for g in groups) or m.refused]
        lines.append(
            f"{topic:<22} consumers {','.join(groups):<20} sent {len(sent):>2} (bad {len(bad)})  "
            f"dead-lettered or refused {len(handled):>2}  stuck consumers: "
            f"{[g for g, t in waiting if t == topic] or 'none'}"
        )
        for m in bad:
            for g in groups:
                letters = m.dead[g]
                if m.refused:
                    continue
                if len(letters) != 1:
                    problems.append(f"{topic} [{m.kind}] → {len(letters)} dead letters from {g}")
                elif not letters[0].get("reason"):
                    problems.append(f"{topic} [{m.kind}] dead letter from {g} without a reason")
        for m in (m for m in sent if not m.bad):
            for g in groups:
                if m.dead[g]:
                    problems.append(f"{topic} [{m.kind}] good message dead-lettered by {g}: {m.dead[g][0]['reason']}")
    problems += [f"{topic}: consumer {group} did not commit past the last message" for group, topic in sorted(waiting)]

    # duplicates have one effect; the good messages around the poison had theirs
    validated = [  # ingestion's, not the ones this test itself sent to records.validated
        b
        for b in readers[RECORDS_VALIDATED.name].seen
        if b.get("record_id") == f"{tag}-ok" and b["producer"] != "reliability"
    ]
    answers = [b for b in readers[PREDICTIONS.name].seen if str(b.get("request_id", "")).startswith(f"{tag}-ok")]
    lines.append(
        f"records.raw good + duplicate + after: validated events {len(validated)} "
        f"(distinct event ids {len({b['event_id'] for b in validated})})"
    )
    lines.append(
        f"predictions.requests good + duplicate + after: answers {len(answers)} "
        f"for requests {sorted({b['request_id'] for b in answers})}"
    )
    if len({b["event_id"] for b in validated}) != 1:
        problems.append(f"records.raw: the good record and its duplicates gave {len(validated)} validated events")
    if sorted(b["request_id"] for b in answers if b["served"]) != [f"{tag}-ok", f"{tag}-ok2"]:
        problems.append(f"predictions.requests: good requests answered {[b['request_id'] for b in answers]}")
    report("poison on every consumed topic", *lines, *(f"✗ {p}" for p in problems))
    assert not problems, "\n".join(problems)
