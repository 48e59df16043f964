"""The closed-loop scenario of `make demo` and the end-to-end tests, against the running stack.

1. Records flow in, and their outcomes later, on their own (as a real client sends them:
   records unlabelled on ``records.raw``, labels 1-5 s late and shuffled on ``labels``); a
   first model is trained, gated and becomes champion.
2. Records are scored by serving; their labels arrive later; no drift.
3. The concept changes. Monitoring detects it, the trainer retrains on data from after the
   change, the registry approves the challenger, serving rolls it out, and the served figure
   (accuracy; a regressor's mean absolute error) recovers,
   with no human step.
4. A report: detection delay, time to recovery, the served figure before/during/after, lineage.

What is streamed comes from a ``Source``: the demo's loan applications (``Loans``: the Agrawal
generator, whose concept changes from one classification function to another) or a real
dataset's history (``flywheel.demo.replay.ReplayStream``: rows in time order, each its
historical day, with the change the data hold). The scenario only uses what a user has: HTTP
APIs and Kafka topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from river.datasets import synth

from flywheel.common.auth import DEV_TOKEN, bearer
from flywheel.common.kafka import client_security
from flywheel.demo.measure import ACCURACY, Measure
from flywheel.demo.replay import Row
from flywheel.schemas import (
    DATASETS_VERSIONED,
    LABELS,
    MODELS_APPROVED,
    MODELS_CHAMPION,
    MODELS_REJECTED,
    MODELS_ROLLOUT,
    MONITORING_DRIFT,
    RECORDS_RAW,
    TRAINING_COMPLETED,
    TRAINING_FAILED,
    TRAINING_REQUESTED,
    LabelObserved,
    RecordSubmitted,
)

WATCHED = [
    DATASETS_VERSIONED.name,
    TRAINING_REQUESTED.name,
    TRAINING_COMPLETED.name,
    TRAINING_FAILED.name,
    MODELS_APPROVED.name,
    MODELS_REJECTED.name,
    MODELS_CHAMPION.name,
    MODELS_ROLLOUT.name,
    MONITORING_DRIFT.name,
]


@dataclass
class ScenarioConfig:
    """How the scenario runs; the defaults fit `make demo` on a 2-core machine."""

    dataset: str = "loans"
    model_name: str = "loans-approval"
    model_spec: str | None = None  # the spec the first model is trained with; None: the dataset's model.yaml
    until_batch: bool = False  # with an online challenger: stream on until a batch retrain is champion
    function_before: int = 0
    function_after: int = 2
    seed: int = 42
    warmup_records: int = 1000
    stable_records: int = 1200
    max_drifted_records: int = 20000  # a cap: the stream stops after_recovery_records after the new champion
    after_recovery_records: int = 400
    rate_per_s: float = 80.0
    label_delay_s: tuple[float, float] = (1.0, 5.0)  # each label this late, uniformly: shuffled
    timeout_s: float = 900.0
    bootstrap_servers: str = "127.0.0.1:9092"
    ingestion_url: str = "http://127.0.0.1:8001"
    training_url: str = "http://127.0.0.1:8003"
    registry_url: str = "http://127.0.0.1:8004"
    serving_url: str = "http://127.0.0.1:8005"
    monitoring_url: str = "http://127.0.0.1:8006"
    # the operator credential the demo trains and seals with: the dev stack's (make demo), or a deployment's
    operator_token: str = DEV_TOKEN
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


@dataclass
class Moment:
    """One thing that happened, for the timeline and the report."""

    at: float
    record: int
    topic: str
    body: dict[str, Any]


@dataclass
class ScenarioResult:
    """What the scenario observed, hop by hop."""

    change_at: float | None = None
    change_record: int | None = None
    first_champion: str | None = None
    new_champion: str | None = None
    drift: Moment | None = None
    drift_ids: set[str] = field(default_factory=set)
    retrain_request: Moment | None = None
    training_run: Moment | None = None
    approval: Moment | None = None
    rollout_steps: list[Moment] = field(default_factory=list)
    promotion: Moment | None = None  # the first promotion after the change, whichever kind of model
    online_promotion: Moment | None = None  # the first promotion of an online challenger's snapshot
    batch_promotion: Moment | None = None  # the first promotion of a batch retrain
    learning: dict[str, str] = field(default_factory=dict)  # run id -> batch or online
    run_of_version: dict[str, str] = field(default_factory=dict)  # approved version -> its run id
    measure: Measure = ACCURACY
    served: dict[str, float | None] = field(default_factory=dict)  # the measure by phase (closed_loop.PHASES)
    lineage: dict[str, Any] | None = None
    why: dict[str, Any] | None = None  # the registry's story of the new champion, event by event
    moments: list[Moment] = field(default_factory=list)

    @property
    def detection_delay(self) -> tuple[int, float] | None:
        if self.drift is None or self.change_at is None or self.change_record is None:
            return None
        return self.drift.record - self.change_record, self.drift.at - self.change_at

    @property
    def closed(self) -> bool:
        """The loop closed by itself: the change was detected, a retrain it caused became champion,
        and the served figure recovered."""
        after, during = self.served.get("after"), self.served.get("during")
        return (
            self.drift is not None
            and self.retrain_request is not None
            and self.new_champion is not None
            and self.new_champion != self.first_champion
            and after is not None
            and (during is None or self.measure.better(after, during))
        )

    @property
    def time_to_recovery(self) -> float | None:
        return self._since_change(self.promotion)

    @property
    def time_to_batch_champion(self) -> float | None:
        return self._since_change(self.batch_promotion)

    def _since_change(self, moment: Moment | None) -> float | None:
        if moment is None or self.change_at is None:
            return None
        return moment.at - self.change_at

    def learning_of(self, version: str) -> str | None:
        """batch or online: how the version was made, as training.completed said; None: not seen."""
        return self.learning.get(self.run_of_version.get(version, ""))


def applications(config: ScenarioConfig, function: int, seed_offset: int) -> Iterator[dict[str, Any]]:
    """Loan applications with their true label, as the data contract wants them."""
    stream = synth.Agrawal(classification_function=function, seed=config.seed + seed_offset)
    for i, (x, y) in enumerate(stream):
        yield {
            "applicant_id": f"demo-{config.run_id}-{function}-{seed_offset}-{i}",
            "applied_at": datetime.now(UTC).isoformat(),
            **{k: (float(v) if k in {"salary", "commission", "hvalue", "loan"} else int(v)) for k, v in x.items()},
            "approved": int(y),
        }


class Source(Protocol):
    """What a scenario streams: the rows of the concept before a change and after it.

    A row is a record as a client sends it (``Row.record``, without its outcome) and the
    outcome that arrives later (``Row.label``).
    """

    dataset: str
    entity_key: str
    measure: Measure

    def history(self) -> Iterator[Row]:
        """Rows the first model is trained on (before the change)."""
        ...

    def before(self) -> Iterator[Row]:
        """Rows scored before the change."""
        ...

    def after(self) -> Iterator[Row]:
        """Rows scored after the change."""
        ...

    def probe(self) -> list[Row]:
        """Rows of the concept before the change that are never sent: does a champion know it?"""
        ...

    def turns(self) -> list[str]:
        """The ways the change can go, tried in order until the champion knows the concept before it;
        ``turn`` makes one current. A replay has one; the generator can swap its concepts."""
        ...

    def turn(self, name: str) -> None: ...

    def change(self) -> str:
        """What changes, for the timeline."""
        ...

    def knows(self, figure: float) -> bool:
        """Whether a champion with this figure (``measure``) on ``probe()`` knows the concept before the change."""
        ...


def _loans_row(record: dict[str, Any]) -> Row:
    label = record.pop("approved")
    return Row(-1, record, label)


@dataclass
class Loans:
    """The demo's loan applications (Agrawal): function ``function_before`` of the config, then ``function_after``."""

    config: ScenarioConfig
    dataset: str = "loans"
    entity_key: str = "applicant_id"
    measure: Measure = ACCURACY

    def history(self) -> Iterator[Row]:
        return map(_loans_row, applications(self.config, self.config.function_before, 0))

    def before(self) -> Iterator[Row]:
        return map(_loans_row, applications(self.config, self.config.function_before, 1))

    def after(self) -> Iterator[Row]:
        return map(_loans_row, applications(self.config, self.config.function_after, 2))

    def probe(self) -> list[Row]:
        function = self.config.function_before
        return [_loans_row(r) for r in itertools.islice(applications(self.config, function, 50 + function), 200)]

    def turns(self) -> list[str]:
        c = self.config
        return [f"{c.function_before}->{c.function_after}", f"{c.function_after}->{c.function_before}"]

    def turn(self, name: str) -> None:
        before, after = (int(f) for f in name.split("->"))
        self.config.function_before, self.config.function_after = before, after

    def change(self) -> str:
        return f"the concept changes: function {self.config.function_before} -> {self.config.function_after}"

    def knows(self, accuracy: float) -> bool:
        return accuracy >= 0.9


class Scenario:
    """Drives the stream and watches the loop's topics; ``run`` returns the observations."""

    def __init__(self, config: ScenarioConfig, console: Console | None = None, source: Source | None = None) -> None:
        self.config = config
        self.source: Source = source or Loans(config)
        if self.source.dataset != config.dataset:
            raise ValueError(f"the source streams {self.source.dataset!r}, the config watches {config.dataset!r}")
        self.console = console or Console()
        self.result = ScenarioResult(measure=self.source.measure)
        self.record_index = 0
        self.started = time.monotonic()
        self.outcomes: list[tuple[int, float, str]] = []  # (record index, outcome, model version)
        self._pending_labels: list[tuple[float, int, LabelObserved]] = []  # a heap by due time
        self._rng = random.Random(config.seed)
        self._labels_sent = 0

    @property
    def predict_url(self) -> str:
        """Where the scenario's model answers (serving's ``/models/{name}/predict``)."""
        return f"{self.config.serving_url}/models/{self.config.model_name}/predict"

    # -- output -----------------------------------------------------------------------

    def say(self, message: str, style: str = "") -> None:
        elapsed = time.monotonic() - self.started
        self.console.print(f"[dim]{elapsed:7.1f}s  #{self.record_index:<6}[/dim] {message}", style=style)

    # -- the run ----------------------------------------------------------------------

    async def run(self) -> ScenarioResult:
        c = self.config
        self.producer = AIOKafkaProducer(
            **client_security(), bootstrap_servers=c.bootstrap_servers, acks="all", enable_idempotence=True, linger_ms=5
        )
        self.http = httpx.AsyncClient(timeout=30, headers=bearer(c.operator_token))
        await self.producer.start()
        watcher = asyncio.create_task(self._watch())
        try:
            await self._wait_healthy()
            async with asyncio.timeout(c.timeout_s):
                await self._first_model()
                await self._stream()
            self.result.lineage = await self._lineage()
            self.result.why = await self._why()
        finally:  # what was seen so far stays in ``self.result``, even when the run timed out
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.producer.stop()
            await self.http.aclose()
            self.result.served = self._served_by_phase()
        return self.result

    async def _wait_healthy(self) -> None:
        c = self.config
        urls = [c.ingestion_url, c.training_url, c.registry_url, c.serving_url, c.monitoring_url]
        for url in urls:
            response = await self.http.get(f"{url}/health")
            if response.status_code >= 500 and "model" not in response.text:
                raise RuntimeError(f"{url} is not healthy: {response.text}")
        self.say("all services answer /health", "green")

    async def _knows(self) -> float | None:
        """The served champion's figure on the concept before the change, from scoring alone (no
        record, no label is sent, so monitoring learns nothing from the probe)."""
        rows = self.source.probe()
        response = await self.http.post(self.predict_url, json={"records": [r.record for r in rows]})
        if response.status_code != 200:
            return None
        answers = response.json()["predictions"]
        # only the champion's own answers: a rollout an interrupted run left may answer some with its candidate
        scored = [(a, r) for a, r in zip(answers, rows, strict=True) if a.get("variant", "champion") == "champion"]
        if len(scored) < len(rows) // 4:
            return None
        return self.source.measure.of([self.source.measure.outcome(a["prediction"], r.label) for a, r in scored])

    async def _concepts_for(self, champion: str) -> bool:
        """A demo runs on whatever stack it finds: the concept before the change is the one the champion
        serves well (a stack after the tests or an earlier demo knows the other one). False: neither."""
        turns = self.source.turns()
        for name in turns:
            self.source.turn(name)
            figure = await self._knows()
            if figure is not None and self.source.knows(figure):
                if name != turns[0]:
                    shown = self.source.measure.show(figure)
                    self.say(f"the champion knows the concept before {name} ({self.source.measure.name} {shown})")
                return True
        self.source.turn(turns[0])
        return False

    async def _first_model(self) -> None:
        """Ingest history with late labels, train the first model, wait until serving answers with it."""
        c = self.config
        champion = await self._champion()
        if champion and await self._concepts_for(champion):
            self.result.first_champion = champion
            self.say(f"a champion already serves: {c.model_name} v{champion}")
            return
        if champion:
            raise RuntimeError(
                f"champion v{champion} of {c.model_name} serves no concept of this scenario well "
                f"({', '.join(self.source.turns())}); roll it back (registry POST /models/{c.model_name}/rollback)"
            )
        self.say(f"ingesting {c.warmup_records} records of the concept before the change, their labels late")
        for row in itertools.islice(self.source.history(), c.warmup_records):
            await self._submit(row)
            self._label_later(row)
        await self.producer.flush()
        await self._wait_for(self._history_sealed, f"{c.warmup_records} rows and labels sealed", 180)
        # The newest records version: training reads it and its chain, so all of the history. The largest,
        # chosen before, left out the versions after it (169-688 of 1,500 rain rows, by how the roller split them).
        sealed = [m.body["manifest"] for m in self.result.moments if m.topic == DATASETS_VERSIONED.name]
        history = [m for m in sealed if m.get("kind", "records") == "records"][-1]["version"]
        response = await self.http.post(
            f"{c.training_url}/train",
            json={
                "model_name": c.model_name,
                "dataset": c.dataset,
                "dataset_version": history,
                **({"model_spec": c.model_spec} if c.model_spec else {}),
                "reason": "demo: first model",
            },
        )
        response.raise_for_status()
        self.say(f"training requested: {response.json()}")
        await self._wait_for(self._champion_now, "the first champion", 300)
        self.result.first_champion = await self._champion()
        self.say(f"first champion: {c.model_name} v{self.result.first_champion}", "bold green")

    async def _stream(self) -> None:
        """Score applications at a steady rate; the concept changes after ``stable_records``."""
        c = self.config
        before, after = self.source.before(), self.source.after()
        recovered_at: int | None = None
        interval = 1 / c.rate_per_s
        next_at = time.monotonic()
        limit = c.stable_records + c.max_drifted_records
        while self.record_index < limit:
            if self.record_index == c.stable_records:
                self.result.change_at, self.result.change_record = time.monotonic(), self.record_index
                self.say(self.source.change(), "bold yellow")
            row = next(before if self.record_index < c.stable_records else after, None)
            if row is None:  # a replay's phase has no more rows
                if self.record_index < c.stable_records:
                    self.record_index = c.stable_records
                    continue
                break
            await self._score(row)
            self.record_index += 1
            await self._deliver_due_labels()
            recovered = self.result.batch_promotion if c.until_batch else self.result.promotion
            if recovered_at is None and recovered is not None:
                recovered_at = self.record_index
            if recovered_at is not None and self.record_index - recovered_at >= c.after_recovery_records:
                break
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await self._deliver_due_labels(everything=True)

    # -- one application --------------------------------------------------------------

    async def _score(self, row: Row) -> None:
        await self._submit(row)
        response = await self.http.post(self.predict_url, json={"records": [row.record]})
        if response.status_code != 200:
            self.say(f"predict answered {response.status_code}: {response.text[:200]}", "red")
            return
        answer = response.json()["predictions"][0]
        outcome = self.source.measure.outcome(answer["prediction"], row.label)
        self.outcomes.append((self.record_index, outcome, str(answer.get("model_version"))))
        self._label_later(row, answer["prediction_id"])

    def _label_later(self, row: Row, prediction_id: str | None = None) -> None:
        """The outcome of a record, known some seconds later: it names the record it labels."""
        record_id = str(row.record[self.source.entity_key])
        label = LabelObserved(
            producer="demo",
            dataset=self.config.dataset,
            label=row.label,
            record_id=record_id,
            entity_id=record_id,
            prediction_id=prediction_id,
        )
        due = time.monotonic() + self._rng.uniform(*self.config.label_delay_s)
        self._labels_sent += 1
        heapq.heappush(self._pending_labels, (due, self._labels_sent, label))

    async def _deliver_due_labels(self, everything: bool = False) -> None:
        """Labels arrive late and out of order: each is published when it is due."""
        now = time.monotonic()
        while self._pending_labels and (everything or self._pending_labels[0][0] <= now):
            _, _, label = heapq.heappop(self._pending_labels)
            await self.producer.send(LABELS.name, label.to_bytes(), key=(label.entity_id or "").encode())

    async def _submit(self, row: Row) -> None:
        """The record as a client sends it: without its outcome, which is not known yet."""
        event = RecordSubmitted(
            producer="demo",
            dataset=self.config.dataset,
            record_id=str(row.record[self.source.entity_key]),
            data=row.record,
        )
        await self.producer.send(RECORDS_RAW.name, event.to_bytes(), key=event.record_id.encode())

    # -- watching the loop ------------------------------------------------------------

    async def _watch(self) -> None:
        consumer = AIOKafkaConsumer(
            *WATCHED,
            **client_security(),
            bootstrap_servers=self.config.bootstrap_servers,
            auto_offset_reset="latest",
            group_id=f"demo-watch-{self.config.run_id}",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            async for message in consumer:
                self._observe(Moment(time.monotonic(), self.record_index, message.topic, json.loads(message.value)))
        finally:
            await consumer.stop()

    def _observe(self, moment: Moment) -> None:
        r, body, topic = self.result, moment.body, moment.topic
        if body.get("model_name") not in (None, self.config.model_name) or (
            body.get("dataset") not in (None, self.config.dataset)
        ):
            return
        r.moments.append(moment)
        after_change = r.change_at is not None
        if topic == MONITORING_DRIFT.name and after_change:
            r.drift_ids.add(str(body.get("event_id")))
        if topic == MONITORING_DRIFT.name and after_change and r.drift is None:
            r.drift = moment
            detail = ", ".join(f"{f['feature']} {f['statistic']}={f['value']:.2f}" for f in body.get("features", []))
            self.say(f"monitoring.drift: {body['kind']} drift ({detail}); retrain={body['retrain']}", "bold red")
        elif topic == TRAINING_REQUESTED.name and after_change and r.retrain_request is None:
            r.retrain_request = moment
            self.say(f"training.requested by {body.get('trigger')}: {body.get('reason', '')[:80]}")
        elif topic == TRAINING_COMPLETED.name:
            if after_change and r.training_run is None:
                r.training_run = moment
            chain = body.get("lineage", {}).get("causation_chain", [])
            if r.retrain_request is None and r.drift_ids.intersection(chain):
                # training took a drift's request itself (none on training.requested); any drift since the
                # change counts, not only the first (a data drift may not ask for a retrain, a later one does)
                r.retrain_request = moment
            metrics, measure, lineage = body.get("metrics", {}), self.source.measure.name, body.get("lineage", {})
            r.learning[body["run_id"]] = lineage.get("learning", "batch")
            learnt = lineage.get("online", {})
            source = (
                f"{learnt.get('labels_learned')} labelled answers learnt online since the drift"
                if lineage.get("learning") == "online"
                else lineage.get("dataset_version")
            )
            self.say(
                f"training.completed: run {body['run_id'][:8]} {measure}={metrics.get(measure, 0):.3f} on {source}"
            )
        elif topic == TRAINING_FAILED.name:
            self.say(f"training.failed: {body.get('reason')}", "red")
        elif topic == MODELS_APPROVED.name:
            r.run_of_version[str(body["version"])] = body["run_id"]
            if after_change and r.approval is None:
                r.approval = moment
            self.say(f"models.approved: v{body['version']} (champion v{body.get('champion_version')})", "green")
        elif topic == MODELS_REJECTED.name:
            self.say(f"models.rejected: failed gates {body.get('failed_gates')}", "red")
        elif topic == MODELS_ROLLOUT.name:
            if after_change:
                r.rollout_steps.append(moment)
            self.say(
                f"models.rollout: {body['strategy']} {body['action']} step {body.get('step')} "
                f"-> {body.get('candidate_traffic', 0):.0%} to v{body['candidate_version']} {body.get('reason', '')}"
            )
        elif topic == MODELS_CHAMPION.name:
            self.say(f"models.champion: v{body['version']} ({body['action']} by {body.get('actor')})", "bold green")
            if after_change and body["action"] == "promote":
                version = str(body["version"])
                if r.promotion is None:
                    r.promotion, r.new_champion = moment, version
                if r.learning_of(version) == "online" and r.online_promotion is None:
                    r.online_promotion = moment
                elif r.learning_of(version) != "online" and r.batch_promotion is None:
                    r.batch_promotion = moment
                    r.new_champion = version  # the batch retrain, which an online snapshot only bridged to
        elif topic == DATASETS_VERSIONED.name:
            manifest = body.get("manifest", {})
            what = "labels" if manifest.get("kind") == "labels" else "rows"
            self.say(f"datasets.versioned: {manifest.get('version')} ({manifest.get('row_count')} {what})", "dim")

    async def _history_sealed(self) -> bool:
        """True once the warm-up rows and their labels are sealed; asks ingestion to seal what it buffers."""
        await self._deliver_due_labels()
        sealed = [m.body["manifest"] for m in self.result.moments if m.topic == DATASETS_VERSIONED.name]
        rows = sum(m["row_count"] for m in sealed if m.get("kind", "records") == "records")
        labels = sum(m["row_count"] for m in sealed if m.get("kind") == "labels")
        if rows >= self.config.warmup_records and labels >= self.config.warmup_records:
            return True
        dataset = f"{self.config.ingestion_url}/datasets/{self.config.dataset}"
        await self.http.post(f"{dataset}/seal")
        if not self._pending_labels:
            await self.http.post(f"{dataset}/labels/seal")
        await asyncio.sleep(1.0)
        return False

    async def _wait_for(self, condition: Any, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            done = condition()
            if asyncio.iscoroutine(done):
                done = await done
            if done:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
            await asyncio.sleep(0.5)

    async def _champion(self) -> str | None:
        response = await self.http.get(f"{self.config.registry_url}/models/{self.config.model_name}")
        if response.status_code != 200:
            return None
        aliases = response.json().get("aliases", {})
        return str(aliases["champion"]) if aliases.get("champion") else None

    async def _champion_now(self) -> bool:
        """The first model serves; a first model that failed to train or was rejected ends the wait, with why."""
        failed = [m.body for m in self.result.moments if m.topic == TRAINING_FAILED.name]
        if failed:
            raise RuntimeError(f"the first model failed to train: {failed[0].get('reason')}")
        rejected = [m.body for m in self.result.moments if m.topic == MODELS_REJECTED.name]
        if rejected:
            gates = "; ".join(g["message"] for g in rejected[0]["gates"] if not g["passed"])
            raise RuntimeError(f"the first model was rejected by the registry's gates: {gates}")
        if await self._champion() is None:
            return False
        probe = self.source.probe()[0].record
        response = await self.http.post(self.predict_url, json={"records": [probe]})
        return response.status_code == 200

    async def _lineage(self) -> dict[str, Any] | None:
        version = self.result.new_champion
        if version is None:
            return None
        response = await self.http.get(
            f"{self.config.registry_url}/models/{self.config.model_name}/versions/{version}/lineage"
        )
        return response.json() if response.status_code == 200 else None

    async def _why(self) -> dict[str, Any] | None:
        """The registry's why of the new champion; None when it cannot tell (the report says so)."""
        version = self.result.new_champion
        if version is None:
            return None
        url = f"{self.config.registry_url}/models/{self.config.model_name}/versions/{version}/why"
        try:
            response = await self.http.get(url, timeout=60)  # the registry reads the loop's topics whole
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    # -- figures ----------------------------------------------------------------------

    def _served_by_phase(self) -> dict[str, float | None]:
        r = self.result
        change = r.change_record if r.change_record is not None else len(self.outcomes)
        recovered = r.promotion.record if r.promotion else None
        batch = r.batch_promotion.record if r.batch_promotion else None  # an online snapshot may come before it

        def share(rows: list[tuple[int, float, str]]) -> float | None:
            return self.source.measure.of([outcome for _, outcome, _ in rows])

        first_minute = change + int(60 * self.config.rate_per_s)  # the same span for every kind of recovery
        return {
            "before": share([o for o in self.outcomes if o[0] < change]),
            "during": share([o for o in self.outcomes if change <= o[0] < (recovered or 10**9)]),
            "after": share([o for o in self.outcomes if recovered is not None and o[0] >= recovered]),
            "first 60 s": share([o for o in self.outcomes if change <= o[0] < first_minute]),
            "after the batch retrain": share([o for o in self.outcomes if batch is not None and o[0] >= batch]),
        }
