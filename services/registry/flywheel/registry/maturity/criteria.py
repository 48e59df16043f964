"""The maturity criteria, area by area: each a level and a judge of ``Evidence`` into a finding with its evidence.

Level 1 (ML pipeline): versioned data, experiment tracking, a training pipeline, a registry whose
champion is set by a deliberate step, basic monitoring, retraining. Level 2 (CI/CD for ML): validated
data, reproducible lineage, quality gates and staging, online experiments (A/B, canary), automated
deployment, performance monitoring, retrains judged against the champion. Level 3 (full automation):
versioned labels, a feature store, automatic rollback, full observability, training on data triggers,
automated retraining on drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

from flywheel.registry.maturity.evidence import Evidence, TrainedVersion
from flywheel.registry.maturity.report import Criterion, Finding, when
from flywheel.schemas import RolloutStepped

AUTOMATIC = frozenset({"serving", "registry"})  # actors that are the platform itself, not a person
DATA_TRIGGERS = frozenset({"drift", "schedule"})  # training the data or the clock asked for, not a person
STAGED = frozenset({"canary", "ab", "shadow", "blue_green"})
DECIDED = frozenset({"promoted", "rolled_back", "inconclusive"})  # rollouts that ended on the live figures
PERFORMANCE_ALERTS = frozenset({"accuracy", "mae", "concept_drift"})
T = TypeVar("T")


def latest(items: Iterable[T], at: Callable[[T], datetime | None]) -> T | None:
    """The newest item by ``at`` (items without a time count as oldest)."""
    found = list(items)
    return max(found, key=lambda i: (at(i) is not None, at(i) or datetime.min)) if found else None


def yes(sentence: str) -> Finding:
    return Finding(True, f"yes — {sentence}")


def no(sentence: str) -> Finding:
    return Finding(False, f"no — {sentence}")


def named(v: TrainedVersion) -> str:
    return f"{v.model_name} v{v.version} (run {v.run_id})"


def version_at(v: TrainedVersion) -> datetime:
    return v.created_at


# -- data management -----------------------------------------------------------------------------


def versioned_data(e: Evidence) -> Finding:
    records = [d for d in e.datasets if d.kind == "records"]
    last = latest(records, lambda d: d.created_at)
    if last is None:
        return no("no sealed dataset version in the object store")
    names = ", ".join(sorted({d.dataset for d in records}))
    return yes(
        f"{len(records)} content-addressed versions with manifests ({names}); latest {last.dataset}@{last.version} "
        f"({last.rows} rows) sealed at {when(last.created_at)}"
    )


def validated_data(e: Evidence) -> Finding:
    checked = [d for d in e.datasets if d.kind == "records" and d.contract_version]
    last = latest(checked, lambda d: d.created_at)
    if last is None:
        return no("no dataset version records the data contract its rows were validated against")
    letter = latest(e.rejected, lambda r: r.occurred_at)
    letters = (
        f"{len(e.rejected)} of the newest records dead-lettered with reasons (latest at {when(letter.occurred_at)}: "
        f"{letter.violations[0].message})"
        if letter
        else "no record rejected lately"
    )
    return yes(f"{last.dataset}@{last.version} sealed under contract {last.contract_version}; {letters}")


def versioned_labels(e: Evidence) -> Finding:
    batches = [d for d in e.datasets if d.kind == "labels"]
    last = latest(batches, lambda d: d.created_at)
    if last is None:
        return no("no label batch sealed: outcomes are not versioned data for point-in-time joins")
    return yes(
        f"{len(batches)} label batches sealed; latest {last.dataset}@{last.version} ({last.rows} outcomes) "
        f"at {when(last.created_at)}, joined point in time by training"
    )


def feature_store(e: Evidence) -> Finding:
    pinned = latest((v for v in e.versions if v.feature_set_version), version_at)
    if pinned is None:
        return no("no run is pinned to a feature-set version shared by training and serving")
    return yes(
        f"{named(pinned)} pinned to feature set version {pinned.feature_set_version}, "
        f"computed the same offline and online, at {when(pinned.created_at)}"
    )


# -- model development ----------------------------------------------------------------------------


def experiment_tracking(e: Evidence) -> Finding:
    tracked = [v for v in e.versions if v.params and v.metrics]
    last = latest(tracked, version_at)
    if last is None:
        return no("no MLflow run with params and metrics behind a registered version")
    return yes(
        f"{len(tracked)} tracked runs; latest {named(last)} with {last.params} params and {last.metrics} metrics "
        f"at {when(last.created_at)}"
    )


def training_pipeline(e: Evidence) -> Finding:
    last = latest((v for v in e.versions if v.trigger), version_at)
    if last is None:
        return no("no run was made by the training service from a request")
    return yes(
        f"{named(last)} trained by the training service on {last.dataset}@{last.dataset_version}, "
        f"asked for by {last.trigger}, at {when(last.created_at)}"
    )


def reproducible_lineage(e: Evidence) -> Finding:
    def complete(v: TrainedVersion) -> bool:
        return all((v.dataset_version, v.code_version, v.seed, v.fingerprint))

    last = latest(e.versions, version_at)
    if last is None:
        return no("no run to reproduce")
    if not complete(last):
        return no(f"{named(last)} lacks its data version, code version, seed or fingerprint")
    return yes(
        f"{named(last)} records data {last.dataset}@{last.dataset_version}, code {last.code_version}, "
        f"seed {last.seed} and fingerprint {(last.fingerprint or '')[:12]}"
    )


# -- deployment ------------------------------------------------------------------------------------


def model_registry(e: Evidence) -> Finding:
    move = latest((c for c in e.champions if c.action == "promote"), lambda c: c.occurred_at)
    if move is None:
        return no("no version was ever made champion in the registry")
    return yes(
        f"{move.model_name} v{move.version} made champion at {when(move.occurred_at)} by {move.actor}"
        + (f" ({move.reason})" if move.reason else "")
    )


def quality_gates(e: Evidence) -> Finding:
    gated = [v for v in e.versions if v.gates]
    last = latest(gated, version_at)
    if last is None:
        return no("no version was judged by quality gates")
    passed = sum(last.gates.values())
    turned_away = sum(1 for v in gated if v.status == "rejected")
    return yes(
        f"{named(last)} {last.status} by {passed}/{len(last.gates)} gates passed at {when(last.created_at)}; "
        f"{len(gated)} versions gated, {turned_away} rejected"
    )


def decided_rollout(e: Evidence, actions: frozenset[str] = DECIDED) -> RolloutStepped | None:
    staged = (r for r in e.rollouts if r.strategy in STAGED and r.action in actions)
    return latest(staged, lambda r: r.occurred_at)


def online_experiments(e: Evidence) -> Finding:
    rollout = decided_rollout(e)
    if rollout is None:
        return no("no canary, A/B or shadow rollout has reached a decision on live traffic")
    tests = ", ".join(f"{m} p={t.p_value:.3g}" for m, t in rollout.tests.items())
    return yes(
        f"{rollout.strategy} of {rollout.model_name} v{rollout.candidate_version} against "
        f"v{rollout.champion_version} ended {rollout.action} at {when(rollout.occurred_at)}"
        + (f" ({tests})" if tests else "")
    )


def automated_deployment(e: Evidence) -> Finding:
    rolled_out = {(r.model_name, r.candidate_version) for r in e.rollouts if r.action == "promoted"}
    moves = (
        c
        for c in e.champions
        if c.action == "promote" and c.actor in AUTOMATIC and (c.model_name, c.version) in rolled_out
    )
    move = latest(moves, lambda c: c.occurred_at)
    if move is None:
        return no("no champion was promoted by the platform after a rollout: deployment waits for a person")
    return yes(f"{move.model_name} v{move.version} promoted by {move.actor} at {when(move.occurred_at)}: {move.reason}")


def automatic_rollback(e: Evidence) -> Finding:
    rollout = decided_rollout(e, frozenset({"rolled_back"}))
    guard = latest((c for c in e.champions if c.action == "rollback" and c.actor in AUTOMATIC), lambda c: c.occurred_at)
    if rollout is None and guard is None:
        return no("no rollout or champion has been rolled back by the platform yet")
    if guard is None or (rollout is not None and rollout.occurred_at >= guard.occurred_at):
        assert rollout is not None
        return yes(
            f"{rollout.strategy} of {rollout.model_name} v{rollout.candidate_version} rolled back at "
            f"{when(rollout.occurred_at)}: {rollout.reason}"
        )
    return yes(f"{guard.model_name} rolled back to v{guard.version} by {guard.actor} at {when(guard.occurred_at)}")


# -- monitoring -------------------------------------------------------------------------------------


def basic_monitoring(e: Evidence) -> Finding:
    answer = latest(e.predictions, lambda p: p.occurred_at)
    if answer is not None:
        return yes(
            f"predictions logged with their model version; latest {answer.model_name} v{answer.model_version} "
            f"at {when(answer.occurred_at)}"
        )
    finding = latest(e.drifts, lambda d: d.occurred_at)
    if finding is not None:
        return yes(f"monitoring reported {finding.kind} drift of {finding.model_name} at {when(finding.occurred_at)}")
    return no("no logged prediction and no monitoring finding")


def performance_monitoring(e: Evidence) -> Finding:
    drift = latest((d for d in e.drifts if d.kind in {"concept", "performance"}), lambda d: d.occurred_at)
    alert = latest((a for a in e.alerts if a.kind in PERFORMANCE_ALERTS), lambda a: a.occurred_at)
    if drift is not None:
        version = f" v{drift.model_version}" if drift.model_version else ""
        return yes(
            f"{drift.kind} drift of {drift.model_name}{version} detected on delayed labels at "
            f"{when(drift.occurred_at)} (window of {drift.window_size})"
        )
    if alert is not None:
        return yes(f"{alert.kind} alert at {when(alert.occurred_at)}: {alert.message}")
    return no("no accuracy figure on delayed labels has been reported (no concept drift, no accuracy alert)")


def full_observability(e: Evidence) -> Finding:
    data = latest((d for d in e.drifts if d.kind == "data"), lambda d: d.occurred_at)
    concept = latest((d for d in e.drifts if d.kind != "data"), lambda d: d.occurred_at)
    alert = latest(e.alerts, lambda a: a.occurred_at)
    if data is None or concept is None or alert is None:
        seen = [name for name, found in (("data drift", data), ("concept drift", concept), ("alerts", alert)) if found]
        shown = ", ".join(seen) or "none"
        return no(f"data drift, concept drift and alerts have not all been reported (seen: {shown})")
    features = ", ".join(f.feature for f in data.features if f.drifted)[:120]
    return yes(
        f"data drift ({features}) at {when(data.occurred_at)}, {concept.kind} drift at {when(concept.occurred_at)}, "
        f"alert '{alert.kind}' at {when(alert.occurred_at)}"
    )


# -- continuous training ------------------------------------------------------------------------------


def retraining(e: Evidence) -> Finding:
    retrain = latest((v for v in e.versions if v.champion_at_gate), version_at)
    if retrain is None:
        return no("no version was trained while a champion served: the model has not been retrained")
    return yes(
        f"{named(retrain)} retrained while v{retrain.champion_at_gate} was champion, at {when(retrain.created_at)}"
    )


def champion_gate(e: Evidence) -> Finding:
    def judged_against_champion(v: TrainedVersion) -> bool:
        return bool(v.champion_at_gate) and any(g.startswith("beats_champion") for g in v.gates)

    retrain = latest(filter(judged_against_champion, e.versions), version_at)
    if retrain is None:
        return no("no retrain was judged against the champion on the same evaluation data")
    gate = next(g for g in retrain.gates if g.startswith("beats_champion"))
    verdict = "passed" if retrain.gates[gate] else "failed"
    return yes(f"{named(retrain)} {verdict} {gate} against champion v{retrain.champion_at_gate}")


def data_triggers(e: Evidence) -> Finding:
    triggered = latest((v for v in e.versions if v.trigger in DATA_TRIGGERS), version_at)
    if triggered is None:
        return no("every run was asked for by a person or a script (trigger api or manual)")
    return yes(f"{named(triggered)} triggered by {triggered.trigger} at {when(triggered.created_at)}")


def retraining_on_drift(e: Evidence) -> Finding:
    promoted = {(r.model_name, r.candidate_version): r for r in e.rollouts if r.action == "promoted"}
    moves = {(c.model_name, c.version) for c in e.champions if c.action == "promote" and c.actor in AUTOMATIC}

    def closed_the_loop(v: TrainedVersion) -> bool:
        key = (v.model_name, v.version)
        return v.trigger == "drift" and key in moves and key in promoted and promoted[key].strategy in STAGED

    run = latest(filter(closed_the_loop, e.versions), version_at)
    if run is None:
        last = latest((v for v in e.versions if v.trigger == "drift"), version_at)
        return no(
            f"the last drift-triggered run, {named(last)}, was not promoted after a staged rollout"
            if last
            else "no drift-triggered run"
        )
    rollout = promoted[(run.model_name, run.version)]
    return yes(
        f"last drift-triggered run {run.run_id} ({run.model_name} v{run.version}) at {when(run.created_at)}, "
        f"promoted after {rollout.strategy} at {when(rollout.occurred_at)}"
    )


CRITERIA = (
    Criterion("versioned_data", "data_management", 1, "versioned datasets", versioned_data),
    Criterion("validated_data", "data_management", 2, "validated data (contracts, dead letters)", validated_data),
    Criterion("versioned_labels", "data_management", 3, "versioned labels, joined point in time", versioned_labels),
    Criterion("experiment_tracking", "model_development", 1, "experiment tracking", experiment_tracking),
    Criterion("training_pipeline", "model_development", 1, "automated training pipeline", training_pipeline),
    Criterion("reproducible_lineage", "model_development", 2, "reproducible lineage", reproducible_lineage),
    Criterion("feature_store", "model_development", 3, "feature store", feature_store),
    Criterion("model_registry", "deployment", 1, "model registry, deployment by a deliberate step", model_registry),
    Criterion("quality_gates", "deployment", 2, "registry with quality gates and staging", quality_gates),
    Criterion("online_experiments", "deployment", 2, "A/B testing (canary, A/B, shadow)", online_experiments),
    Criterion("automated_deployment", "deployment", 2, "automated deployment", automated_deployment),
    Criterion("automatic_rollback", "deployment", 3, "automatic rollback", automatic_rollback),
    Criterion("basic_monitoring", "monitoring", 1, "basic monitoring (prediction log)", basic_monitoring),
    Criterion("performance_monitoring", "monitoring", 2, "performance monitoring", performance_monitoring),
    Criterion("full_observability", "monitoring", 3, "full observability", full_observability),
    Criterion("retraining", "continuous_training", 1, "retraining by the pipeline", retraining),
    Criterion("champion_gate", "continuous_training", 2, "retrains judged against the champion", champion_gate),
    Criterion("data_triggers", "continuous_training", 3, "continuous training on data triggers", data_triggers),
    Criterion("retraining_on_drift", "continuous_training", 3, "automated retraining on drift", retraining_on_drift),
)
