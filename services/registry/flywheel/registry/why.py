"""Why a version exists and serves, told from the events themselves: drift → request → run → gates →
rollout → champion, with the time of each step, the durations between, and the holes in the chain.

Pure: the events (those of the model, from the control-plane topics) and the version's lineage in,
the story out. Events of one loop share a ``correlation_id`` (``Event.caused``); each names its cause
in ``causation_id``. A hole is an event whose cause is not in the loop (other than the loop's root,
the drift or the request), or a stage the loop should have but does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from flywheel.schemas import (
    ChampionChanged,
    DriftDetected,
    Event,
    ModelApproved,
    ModelRejected,
    ModelTrained,
    RolloutStepped,
    TrainingFailed,
    TrainModel,
)

# the order of the stages, to break ties between events of one instant (a drift's request is dated at the drift)
STAGES: dict[type[Event], str] = {
    DriftDetected: "drift",
    TrainModel: "request",
    ModelTrained: "run",
    TrainingFailed: "run",
    ModelApproved: "decision",
    ModelRejected: "decision",
    RolloutStepped: "rollout",
    ChampionChanged: "champion",
}
RANK = {stage: i for i, stage in enumerate(dict.fromkeys(STAGES.values()))}
# what starts a loop, the drift or else the request: its cause (a prediction, a label, a person) is outside it
ROOTS = (DriftDetected, TrainModel)
SERVICES = {"serving", "registry"}  # a champion move by anyone else without a cause is a person's act, not a hole
ROLLOUT_ENDS = {"promoted", "rolled_back", "aborted", "inconclusive"}


def loop_of(events: Iterable[Event], lineage: dict[str, Any]) -> UUID | None:
    """The loop (correlation id) the version belongs to: its run's tag, else that of an event its lineage names.

    >>> from uuid import uuid4
    >>> loop = uuid4()
    >>> loop_of([], {"correlation_id": str(loop)}) == loop
    True
    >>> request = TrainModel(model_name="m", dataset="d", correlation_id=loop)
    >>> loop_of([request], {"causation_chain": [str(request.event_id)]}) == loop
    True
    """
    if lineage.get("correlation_id"):
        return UUID(str(lineage["correlation_id"]))
    named = set(lineage.get("causation_chain") or [])
    return next((e.correlation_id for e in events if str(e.event_id) in named), None)


def in_order(events: Iterable[Event]) -> list[Event]:
    """The events once each (a redelivery repeats an id), by time, then by stage."""
    unique = {e.event_id: e for e in events}
    return sorted(unique.values(), key=lambda e: (e.occurred_at, RANK[STAGES[type(e)]]))


def explain(events: Iterable[Event], lineage: dict[str, Any]) -> dict[str, Any]:
    """The story of one version: its loop's events as timed steps, what came after, and the holes."""
    name, version = lineage["model_name"], str(lineage["version"])
    known = [e for e in events if type(e) in STAGES and getattr(e, "model_name", None) == name]
    loop = loop_of(known, lineage)
    chain = in_order(e for e in known if e.correlation_id == loop)
    later = aftermath(known, chain, version)
    steps = timed([step(e, lineage) for e in chain] + [step(e, lineage, in_loop=False) for e in later])
    holes = broken_links(chain) + missing_stages(chain, lineage) + unseen(chain, lineage)
    return {
        "model_name": name,
        "version": version,
        "status": lineage.get("status"),
        "aliases": lineage.get("aliases") or [],
        "correlation_id": str(loop) if loop else None,
        "started_at": steps[0]["at"] if steps else None,
        "ended_at": steps[-1]["at"] if steps else None,
        "duration_s": steps[-1]["since_start_s"] if steps else None,
        "steps": steps,
        "holes": holes,
    }


def aftermath(events: list[Event], chain: list[Event], version: str) -> list[Event]:
    """Champion moves outside the loop that took ``version`` out of service (a rollback, a newer champion)."""
    ids = {e.event_id for e in chain}
    start = chain[0].occurred_at if chain else None
    return in_order(
        e
        for e in events
        if isinstance(e, ChampionChanged)
        and e.event_id not in ids
        and e.previous_version == version
        and e.version != version
        and (start is None or e.occurred_at >= start)
    )


def timed(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each step with its seconds since the first step and since the one before."""
    if not steps:
        return steps
    first = previous = datetime.fromisoformat(steps[0]["at"])
    for s in steps:
        at = datetime.fromisoformat(s["at"])
        s["since_start_s"] = round((at - first).total_seconds(), 3)
        s["since_previous_s"] = round((at - previous).total_seconds(), 3)
        previous = at
    return steps


# -- holes ----------------------------------------------------------------------------------


def person_act(event: Event) -> bool:
    """A champion move someone asked for by hand: no event caused it, and that is no hole."""
    return isinstance(event, ChampionChanged) and event.causation_id is None and event.actor not in SERVICES


def broken_links(chain: list[Event]) -> list[str]:
    """Events of the loop whose cause is not in it: every one but the root must name one that is."""
    ids = {e.event_id for e in chain}
    root = next((e for kind in ROOTS for e in chain if isinstance(e, kind)), None)
    holes = []
    for event in chain:
        if event is root or event.causation_id in ids or person_act(event):
            continue
        cause = "names no cause" if event.causation_id is None else f"names cause {event.causation_id}, not in the loop"
        holes.append(f"{event.event_type} {event.event_id} ({STAGES[type(event)]}) {cause}")
    return holes


def missing_stages(chain: list[Event], lineage: dict[str, Any]) -> list[str]:
    """The stages this loop should have, given what it says of itself, that no event shows."""
    version = str(lineage["version"])
    found = {t: [e for e in chain if isinstance(e, t)] for t in STAGES}
    request = next(iter(found[TrainModel]), None)
    trigger = request.trigger if request else lineage.get("trigger")
    run = next((e for e in found[ModelTrained] if e.run_id == lineage.get("run_id")), None)
    online = run is not None and run.lineage.learning == "online"  # a snapshot answers the drift itself
    expected = [
        (trigger == "drift" or online, found[DriftDetected], "no DriftDetected, though the run says drift"),
        (not online, found[TrainModel], "no TrainModel (the training request) in the loop"),
        (True, found[ModelTrained], f"no ModelTrained for run {lineage.get('run_id')}"),
    ]
    decision = next((e for e in chain if isinstance(e, ModelApproved | ModelRejected)), None)
    if lineage.get("status") != "pending_approval":
        decided = [decision] if decision else []
        expected.append((True, decided, f"no gate decision (ModelApproved or ModelRejected) on v{version}"))
    promotions = [e for e in found[ChampionChanged] if e.version == version and e.action == "promote"]
    if isinstance(decision, ModelApproved) and decision.champion_version is not None:
        rollout = found[RolloutStepped]
        expected.append((True, rollout, f"no RolloutStepped: v{version} was approved as challenger"))
        promoted = any(e.action == "promoted" for e in rollout)
        expected.append((promoted, promotions, "no ChampionChanged, though the rollout promoted"))
    elif isinstance(decision, ModelApproved):
        expected.append((True, promotions, f"no ChampionChanged making first model v{version} champion"))
    champion = "champion" in (lineage.get("aliases") or [])
    expected.append((champion, promotions, f"v{version} is champion, but no ChampionChanged in its loop made it so"))
    return list(dict.fromkeys(why for needed, seen, why in expected if needed and not seen))


def unseen(chain: list[Event], lineage: dict[str, Any]) -> list[str]:
    """Event ids the version's lineage names that are not in its loop."""
    ids = {str(e.event_id) for e in chain}
    named = lineage.get("causation_chain") or []
    return [f"event {i}, named by the version's lineage, is not in the loop" for i in named if i not in ids]


# -- one step per event ---------------------------------------------------------------------


def step(event: Event, lineage: dict[str, Any], in_loop: bool = True) -> dict[str, Any]:
    """One event as a step of the story: when, what, a one-line summary and its key figures."""
    summary, figures = TELLERS[type(event)](event, lineage)
    return {
        "at": event.occurred_at.isoformat(),
        "stage": STAGES[type(event)],
        "event_type": event.event_type,
        "event_id": str(event.event_id),
        "causation_id": str(event.causation_id) if event.causation_id else None,
        "producer": event.producer,
        "in_loop": in_loop,
        "summary": summary,
        "figures": figures,
    }


def drift_step(e: DriftDetected, _: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = ", ".join(f"{f.feature} {f.statistic} {f.value:.3g} (threshold {f.threshold:.3g})" for f in e.features)
    summary = f"{e.kind} drift on v{e.model_version or '?'} over {e.window_size}: {found or 'no detail'}"
    figures = {
        "kind": e.kind,
        "statistics": [f.model_dump(mode="json") for f in e.features],
        "window": {"start": _iso(e.window_start), "end": _iso(e.window_end), "size": e.window_size},
        "reference_version": e.reference_version,
        "model_version": e.model_version,
        "retrain": e.retrain,
    }
    return summary + ("; retrain asked" if e.retrain else ""), figures


def request_step(e: TrainModel, _: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    figures = {"trigger": e.trigger, "reason": e.reason, "dataset": e.dataset, "dataset_version": e.dataset_version}
    figures |= {"model_spec": e.model_spec, "params": e.params}
    return f"training requested ({e.trigger}): {e.reason or 'no reason given'}", figures


def run_step(e: ModelTrained, lineage: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    versions = e.lineage.dataset_versions or [e.lineage.dataset_version]
    batches = [b for b in str((lineage.get("params") or {}).get("label_batches", "")).split(",") if b and b != "none"]
    figures = {
        "run_id": e.run_id,
        "dataset": e.lineage.dataset,
        "data_versions": versions,
        "label_cutoff": batches[-1] if batches else None,
        "label_batches": len(batches),
        "window": e.lineage.window,
        "params": e.lineage.params,
        "metrics": e.metrics,
        "duration_s": e.duration_s,
        "merged_requests": e.merged_requests,
        "repeat": e.repeat,
    }
    if e.lineage.learning == "online":
        learnt = e.lineage.online
        figures |= {"learning": "online", "online": learnt}
        summary = (
            f"online snapshot {learnt.get('snapshot')} (run {e.run_id}): learnt {learnt.get('labels_learned')} "
            f"labelled answers one at a time since the drift, judged on the {learnt.get('held_out')} that followed"
        )
        return summary, figures
    summary = f"run {e.run_id} trained on {len(versions)} data version(s) in {e.duration_s:.1f} s"
    return summary + (f", {e.merged_requests} requests merged" if e.merged_requests > 1 else ""), figures


def failed_step(e: TrainingFailed, _: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return f"training failed: {e.reason[:200]}", {"run_id": e.run_id, "reason": e.reason}


def decision_step(e: ModelApproved | ModelRejected, _: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    gates = [{"gate": g.gate, "passed": g.passed, "message": g.message} for g in e.gates]
    figures = {"version": e.version, "champion_version": e.champion_version, "gates": gates, "metrics": e.metrics}
    if isinstance(e, ModelRejected):
        return f"v{e.version} rejected: failed {', '.join(e.failed_gates)}", figures
    against = f"challenger to v{e.champion_version}" if e.champion_version else "first model"
    return f"v{e.version} approved ({against}): {len(gates)} gate(s) passed", figures


def rollout_step(e: RolloutStepped, _: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    figures = {
        "action": e.action,
        "strategy": e.strategy,
        "step": e.step,
        "candidate_traffic": e.candidate_traffic,
        "live": e.figures,
        "tests": {m: t.model_dump(mode="json") for m, t in e.tests.items()},
        "elapsed_s": e.elapsed_s,
        "reason": e.reason,
    }
    where = f"step {e.step}, {e.candidate_traffic:.0%} of traffic"
    return f"{e.strategy} rollout of v{e.candidate_version} {e.action} ({where}): {e.reason}", figures


def champion_step(e: ChampionChanged, _: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    figures = {"action": e.action, "version": e.version, "previous_version": e.previous_version}
    figures |= {"actor": e.actor, "reason": e.reason}
    moved = f"v{e.previous_version} → v{e.version}" if e.previous_version else f"v{e.version}"
    return f"champion {e.action}: {moved} by {e.actor}" + (f" ({e.reason})" if e.reason else ""), figures


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


TELLERS: dict[type[Event], Callable[[Any, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
    DriftDetected: drift_step,
    TrainModel: request_step,
    ModelTrained: run_step,
    TrainingFailed: failed_step,
    ModelApproved: decision_step,
    ModelRejected: decision_step,
    RolloutStepped: rollout_step,
    ChampionChanged: champion_step,
}
