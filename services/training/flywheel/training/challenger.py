"""The online challenger of one model: a river learner beside the batch champion, proposed after a concept drift.

Pure state, no I/O: the subscriber feeds it labelled answers, drifts and verdicts, and logs the
proposals it returns (``snapshots.py``). Between drifts it only keeps the latest labelled rows. A
concept drift opens an *episode*: a fresh learner learns the last ``backfill_rows`` of them, then
every label that follows. From ``min_rows`` on, every ``held_out`` rows a frozen copy is taken; the next
``held_out`` rows, which the copy never learnt, are its window. A copy that beats, on its window and
by the registry's primary metric, the answers the champion served for those very labels by ``margin``
and the trivial baseline by what the registry's gate asks (its margin and allowance for chance) is
proposed: the registry gates it against the champion on that window
and serving rolls it out. One proposal waits for its verdict, and an approved one for the end of its
rollout, at a time; the drift's batch retrain, ``max_candidates`` or ``max_s`` end the episode. No
drift, no episode: a healthy champion is never churned.

The learner goes on learning while its snapshot is gated and rolled out; once that rollout ended, a
later snapshot that beats the answers served since (the promoted snapshot's) is proposed in turn.

>>> from flywheel.common.featuresets import FeatureSet
>>> from flywheel.common.modelspec import ModelSpec
>>> spec = ModelSpec(model_name="m", dataset="d", label="y", estimator={"path": "sklearn.tree.DecisionTreeClassifier"},
...     online_challenger={"estimator": {"path": "river.tree.HoeffdingTreeClassifier", "params": {"grace_period": 20}},
...         "backfill_rows": 20, "min_rows": 40, "held_out": 20})
>>> features = FeatureSet(feature_set="f", dataset="d", entity_key="id", timestamp="at",
...     features=[{"name": "x", "inputs": ["x"]}])
>>> challenger = OnlineChallenger(spec, features)
>>> rows = [Row({"x": float(i % 10)}, int(i % 10 >= 5), served=int(i % 10 < 5), label_id=str(i)) for i in range(400)]
>>> [challenger.learn(r, now=0.0) for r in rows[:50]] == [None] * 50  # no drift: nothing proposed
True
>>> challenger.on_drift("drift-1", now=0.0)
>>> proposal = next(p for r in rows[50:200] if (p := challenger.learn(r, now=1.0)))
>>> proposal.drift_id, proposal.learned_rows >= 40, len(proposal.window), proposal.metric
('drift-1', True, 20, 'balanced_accuracy')
>>> proposal.scores["copy"] > proposal.scores["served"] + 0.02 and proposal.scores["copy"] > 0.52
True
>>> challenger.logged(proposal, "run-1")  # while the registry judges it and serving rolls it out, none other
>>> challenger.verdict("run-1", "2", approved=True)
>>> [challenger.learn(r, now=2.0) for r in rows[200:300]] == [None] * 100
True
>>> challenger.rollout_ended("2", promoted=True)
>>> served_by_v2 = [Row(r.inputs, r.label, served=r.label, label_id=f"b{r.label_id}") for r in rows]
>>> [challenger.learn(r, now=3.0) for r in served_by_v2[:200]] == [None] * 200  # it cannot beat perfect answers
True
>>> challenger.batch_arrived({"drift-1"}); challenger.episode is None, dict(challenger.ended)
(True, {'drift-1': 'the batch retrain arrived'})
"""

from __future__ import annotations

import copy
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score

from flywheel.common.evaluation import answer_error, chance_allowance, label_type
from flywheel.common.featuresets import FeatureSet
from flywheel.common.modelspec import ModelSpec
from flywheel.training.handlers import retrain_request_id


@dataclass(frozen=True)
class Row:
    """One labelled answer as the learner sees it: the request's raw inputs, the label, what was served."""

    inputs: dict[str, Any]
    label: Any
    served: Any = None
    label_id: str = ""
    at: str = ""  # when the label was observed (ISO 8601), for the lineage
    served_by: str = ""  # the model version that gave the served answer


@dataclass
class Proposal:
    """A frozen copy that beat the served answers on rows it never learnt: a candidate to log."""

    drift_id: str
    number: int
    model: Any
    learned: list[Row]
    window: list[Row]
    metric: str  # the registry's primary metric the window was judged on
    scores: dict[str, float]  # copy, served, baseline: higher better (errors negated)
    cause: Any = None  # the drift event
    run_id: str | None = None

    @property
    def learned_rows(self) -> int:
        return len(self.learned)


@dataclass
class Episode:
    """What one concept drift set learning: the live learner, its frozen copy and the copy's window."""

    drift_id: str
    opened: float
    cause: Any = None  # the drift event, which the snapshots' events are caused by
    learner: Any = None
    learned: list[Row] = field(default_factory=list)
    frozen: Any = None
    frozen_learned: int = 0
    window: list[Row] = field(default_factory=list)
    proposals: int = 0
    waiting: str | None = None  # the run id of the proposal awaiting its verdict
    rolling: str | None = None  # the approved version whose rollout is running
    rolled: set[str] = field(default_factory=set)  # versions whose rollout ended (its end may come before its verdict)
    promoted: list[str] = field(default_factory=list)  # the versions promoted in this episode


class OnlineChallenger:
    """One model's online challenger (``ModelSpec.online_challenger``)."""

    def __init__(self, spec: ModelSpec, features: FeatureSet, keep: int = 2000) -> None:
        if spec.online_challenger is None:
            raise ValueError(f"model {spec.model_name!r}'s spec keeps no online challenger")
        self.spec, self.settings, self.features = spec, spec.online_challenger, features
        self.recent: deque[Row] = deque(maxlen=max(keep, self.settings.backfill_rows))
        self._seen: OrderedDict[str, None] = OrderedDict()  # label ids learnt, so a redelivery is learnt once
        self.keep = keep
        # what the registry gates on: the spec's primary metric, else the registry's default for the task (and
        # that default for a metric a window of labels alone does not give: roc_auc and log_loss want scores)
        default = "rmse" if spec.task == "regression" else "balanced_accuracy"
        primary = spec.gates.primary_metric
        self.metric = primary if primary in FIGURES[spec.task] else default
        self.episode: Episode | None = None
        self.ended: OrderedDict[str, str] = OrderedDict()  # drift id -> why its episode ended

    # -- what comes in -------------------------------------------------------------------

    def on_drift(self, drift_id: str, now: float, cause: Any = None) -> None:
        """A concept drift of the model: open an episode (one at a time; a drift already answered, never again)."""
        if self.episode is not None and now - self.episode.opened > self.settings.max_s:
            self.end("timed out")  # no label came since to end it, nor a verdict or rollout it waited for
        if self.episode is not None or drift_id in self.ended:
            return
        self.episode = Episode(drift_id, now, cause)
        backfill = list(self.recent)[-self.settings.backfill_rows :] if self.settings.backfill_rows else []
        for row in backfill:
            self._learn(self.episode, row)

    def learn(self, row: Row, now: float) -> Proposal | None:
        """Test then train on one labelled answer; a proposal when a frozen copy has earned one."""
        if row.label_id:
            if row.label_id in self._seen:
                return None
            self._seen[row.label_id] = None
            while len(self._seen) > self.keep * 4:
                self._seen.popitem(last=False)
        self.recent.append(row)
        episode = self.episode
        if episode is None:
            return None
        if now - episode.opened > self.settings.max_s:
            self.end("timed out")
            return None
        if episode.frozen is not None:
            episode.window.append(row)
        self._learn(episode, row)
        if episode.frozen is None and len(episode.learned) < self.settings.min_rows:
            return None  # too young to be judged: its first copy is frozen once it learnt min_rows
        if len(episode.window) < self.settings.held_out and episode.frozen is not None:
            return None
        try:
            return self._judge(episode)
        finally:
            self._freeze(episode)  # whatever the judging did: the next window starts here

    def awaits(self, proposal: Proposal) -> bool:
        """Whether the episode that made the proposal still waits for it to be logged: once its episode ended
        (the batch retrain came, or it timed out), a late snapshot is not proposed."""
        episode = self.episode
        return episode is not None and episode.drift_id == proposal.drift_id and episode.waiting == _logging(proposal)

    def logged(self, proposal: Proposal, run_id: str | None) -> None:
        """The proposal is a run now, whose verdict is awaited before the next is made; None: logging it failed,
        and the next may come."""
        proposal.run_id = run_id
        if self.episode is not None and self.episode.drift_id == proposal.drift_id:
            self.episode.waiting = run_id

    def verdict(self, run_id: str, version: str | None, approved: bool) -> None:
        """The registry's verdict on a run: an approved proposal is rolled out (the next waits for its end), a
        rejected one lets the next come."""
        episode = self.episode
        if episode is None or episode.waiting != run_id:
            return
        episode.waiting = None
        episode.rolling = version if approved and version not in episode.rolled else None
        if not approved and episode.proposals >= self.settings.max_candidates:
            self.end("no snapshot approved")

    def rollout_ended(self, version: str, promoted: bool) -> None:
        """The rollout of an approved snapshot ended: the learner, which kept learning, may propose a better one."""
        episode = self.episode
        if episode is None:
            return
        episode.rolled.add(version)
        if episode.rolling != version:
            return
        episode.rolling = None
        if promoted:
            episode.promoted.append(version)
        if episode.proposals >= self.settings.max_candidates:
            self.end("all its snapshots proposed")

    def batch_arrived(self, answered: set[str]) -> None:
        """A batch run of the model finished; when it answers the episode's drift (the drift, or the training
        request it caused, among the ids it answers), the episode is over: the batch model takes it from here."""
        episode = self.episode
        if episode is not None and (episode.drift_id in answered or _retrain_of(episode.drift_id) in answered):
            self.end("the batch retrain arrived")

    def end(self, why: str) -> None:
        if self.episode is None:
            return
        self.ended[self.episode.drift_id] = why
        while len(self.ended) > 1000:
            self.ended.popitem(last=False)
        self.episode = None

    # -- learning and judging ------------------------------------------------------------

    def _vector(self, row: Row) -> np.ndarray:
        return np.asarray([self.features.vector(row.inputs)], dtype=float)

    def _label(self, row: Row) -> Any:
        return label_type(self.spec.task)(row.label)

    def _learn(self, episode: Episode, row: Row) -> None:
        x, y = self._vector(row), np.asarray([self._label(row)])
        if episode.learner is None:
            import pandas as pd

            episode.learner = self.spec.challenger().build()
            episode.learner.fit(pd.DataFrame(x, columns=self.features.names), y)
        else:
            episode.learner.partial_fit(x, y)
        episode.learned.append(row)

    def _freeze(self, episode: Episode) -> None:
        learner = episode.learner
        episode.frozen = learner.frozen() if hasattr(learner, "frozen") else copy.deepcopy(learner)
        episode.frozen_learned = len(episode.learned)
        episode.window = []

    def _needed(self, scores: dict[str, float], trivial: list[Any], labels: list[Any]) -> float:
        """What the copy must reach to pass the registry's gates: the served answers (the champion's) by
        ``margin``, and the trivial baseline by the gate's margin and the allowance for chance on the window."""
        scale = (lambda figure: abs(figure)) if self.spec.task == "regression" else (lambda figure: 1.0)
        baseline = {"accuracy": figure("accuracy", trivial, labels), self.metric: scores["baseline"]}
        allowance = chance_allowance(self.metric, len(labels), baseline)
        beyond_baseline = max(self.settings.margin, self.spec.gates.baseline_margin or 0.01) + allowance
        return max(
            scores["served"] + self.settings.margin * scale(scores["served"]),
            scores["baseline"] + beyond_baseline * scale(scores["baseline"]),
        )

    def _judge(self, episode: Episode) -> Proposal | None:
        """The frozen copy's proposal, when it learnt enough and beat the served answers on its window."""
        ready = episode.frozen is not None and episode.frozen_learned >= self.settings.min_rows
        busy = episode.waiting is not None or episode.rolling is not None
        if not ready or busy or episode.proposals >= self.settings.max_candidates:
            return None
        # labels come late: once a snapshot was promoted, only the answers it served say what it must beat
        newest = episode.promoted[-1] if episode.promoted else None
        window = [
            r
            for r in episode.window
            if answer_error(self.spec.task, r.served, r.label) is not None and newest in (None, r.served_by)
        ]
        if len(window) < self.settings.held_out // 2:
            return None
        labels = [self._label(r) for r in window]
        answers = [_plain(a) for a in episode.frozen.predict(np.vstack([self._vector(r) for r in window]))]
        served = [label_type(self.spec.task)(r.served) for r in window]
        learned = [self._label(r) for r in episode.learned[: episode.frozen_learned]]
        trivial = [_trivial(learned, self.spec.task)] * len(window)
        scores = {
            name: figure(self.metric, said, labels)
            for name, said in (("copy", answers), ("served", served), ("baseline", trivial))
        }
        if scores["copy"] < self._needed(scores, trivial, labels):
            return None
        episode.proposals += 1
        episode.waiting = _logging_number(episode.proposals)
        return Proposal(
            episode.drift_id,
            episode.proposals,
            episode.frozen,
            episode.learned[: episode.frozen_learned],
            window,
            self.metric,
            scores,
            episode.cause,
        )


FIGURES = {"classification": ("accuracy", "balanced_accuracy"), "regression": ("mae", "rmse")}


def figure(metric: str, answers: list[Any], labels: list[Any]) -> float:
    """How good ``answers`` are by the registry's primary ``metric``, higher better (errors negated).

    >>> figure("balanced_accuracy", [1, 1, 1, 1], [1, 1, 1, 0]), figure("accuracy", [1, 1, 1, 1], [1, 1, 1, 0])
    (0.5, 0.75)
    >>> figure("mae", [1.0, 3.0], [2.0, 2.0]), figure("rmse", [0.0, 4.0], [2.0, 2.0])
    (-1.0, -2.0)
    """
    said, truth = np.asarray(answers), np.asarray(labels)
    if metric == "mae":
        return -float(np.mean(np.abs(said - truth)))
    if metric == "rmse":
        return -float(np.sqrt(np.mean((said - truth) ** 2)))
    if metric == "accuracy":
        return float(np.mean(said == truth))
    return float(balanced_accuracy_score(truth, said))


def _trivial(learned: list[Any], task: str) -> Any:
    """The trivial baseline's one answer: the majority class of the learnt rows, or their mean."""
    if task == "regression":
        return float(np.mean(learned))
    values, counts = np.unique(np.asarray(learned), return_counts=True)
    return _plain(values[counts.argmax()])


def _logging_number(number: int) -> str:
    return f"logging snapshot {number}"


def _logging(proposal: Proposal) -> str:
    return _logging_number(proposal.number)


def _retrain_of(drift_id: str) -> str | None:
    try:
        return str(retrain_request_id(uuid.UUID(drift_id)))
    except ValueError:  # not a UUID: no request was derived from it
        return None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
