"""The closed loop on the real stack: drift → retrain → approval → canary → new champion → recovery."""

from datetime import UTC, datetime

import httpx
import pytest
from rich.console import Console

from flywheel.demo.closed_loop import report
from flywheel.demo.scenario import Scenario
from flywheel.schemas import MODELS_ROLLOUT, MONITORING_DRIFT, TRAINING_REQUESTED
from tests.e2e.conftest import on_this_stack
from tests.e2e.maturity import MeasuredScenario, criterion, levels, maturity, show

pytestmark = pytest.mark.timeout(1200)


async def test_concept_drift_is_detected_retrained_rolled_out_and_accuracy_recovers(services, topics):
    config = on_this_stack(
        stable_records=800, max_drifted_records=12000, after_recovery_records=300, rate_per_s=60.0, timeout_s=1000
    )
    started = datetime.now(UTC)
    scenario = MeasuredScenario(config, Console(force_terminal=False, width=140), since=started)
    result = await scenario.run()
    report(result, config, Console(width=140))

    before_change = [m for m in result.moments if m.record < (result.change_record or 0)]
    assert not [m for m in before_change if m.topic == MONITORING_DRIFT.name and result.first_champion], (
        "monitoring raised drift on the stable stream"
    )
    assert result.drift is not None, "the concept change was never detected"
    assert result.drift.body["retrain"] is True
    delay_records, _ = result.detection_delay
    # concept drift is seen through labels, which arrive up to label_delay_s[1] late
    bound = 150 + config.label_delay_s[1] * config.rate_per_s
    assert delay_records <= bound, f"detected {delay_records} records after the change (bound {bound:.0f})"

    assert result.retrain_request is not None, "no training request followed the drift"
    assert result.retrain_request.body["causation_id"] == result.drift.body["event_id"]
    assert result.training_run is not None and result.approval is not None

    steps = [m.body for m in result.rollout_steps if m.topic == MODELS_ROLLOUT.name]
    assert any(s["strategy"] == "canary" and s["action"] == "stepped" for s in steps)
    assert any(s["action"] == "promoted" for s in steps)
    assert result.new_champion is not None and result.new_champion != result.first_champion

    accuracy = result.served
    assert accuracy["before"] > 0.9
    assert accuracy["during"] < accuracy["before"]
    assert accuracy["after"] > 0.85 and accuracy["after"] > accuracy["during"]

    assert result.lineage is not None
    # the records were sent unlabelled; every outcome arrived late, on `labels`, and the run says so
    assert result.lineage["metrics"]["labels.labelled_late"] >= 1000, result.lineage["metrics"]
    assert result.lineage["metrics"]["labels.labelled_with_record"] == 0
    assert str(result.drift.body["event_id"]) in str(result.lineage), "lineage does not lead back to the drift"
    assert any(m.topic == TRAINING_REQUESTED.name for m in result.moments)

    # the maturity model, checked live: the loop raised this model's level (measured since the test began)
    before, after = scenario.before, await maturity(config, started)
    assert before is not None, "the maturity before the stream was never taken"
    show(after, Console(width=160))
    assert levels(before)["continuous_training"] < 3 and not criterion(before, "retraining_on_drift")["met"], before
    assert levels(after)["continuous_training"] == 3, after
    evidence = criterion(after, "retraining_on_drift")["evidence"]
    assert f"({config.model_name} v{result.new_champion})" in evidence and "promoted after canary" in evidence
    assert levels(after)["deployment"] >= 2 > levels(before)["deployment"], (before, after)
    assert after["level"] >= before["level"]

    # `flywheel why`: the registry tells, from the events alone, why the new champion serves, with no hole
    url = f"{config.registry_url}/models/{config.model_name}/versions/{result.new_champion}/why"
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.get(url)
    assert answer.status_code == 200, answer.text
    why = answer.json()
    assert why["holes"] == [], why["holes"]
    chain = [(s["event_type"], s["figures"].get("action")) for s in why["steps"] if s["in_loop"]]
    for link in [
        ("DriftDetected", None),
        ("TrainModel", None),
        ("ModelTrained", None),
        ("ModelApproved", None),
        ("RolloutStepped", "started"),
        ("RolloutStepped", "promoted"),
        ("ChampionChanged", "promote"),
    ]:
        assert link in chain, f"{link} missing from the why of v{result.new_champion}: {chain}"
    assert chain[0] == ("DriftDetected", None) and chain[-1] == ("ChampionChanged", "promote"), chain
    assert why["steps"][0]["event_id"] in result.drift_ids, "the chain does not start at a drift the scenario saw"


async def test_a_stable_stream_of_the_same_length_raises_no_drift_and_trains_nothing(services, topics):
    # runs after the loop above: the champion now knows function 2, and the stream stays on it
    config = on_this_stack(
        function_before=2,
        function_after=2,
        stable_records=800,
        max_drifted_records=1700,
        rate_per_s=80.0,
        timeout_s=600,
    )
    result = await Scenario(config, Console(force_terminal=False, width=140)).run()
    assert result.first_champion is not None
    drifts = [m.body for m in result.moments if m.topic == MONITORING_DRIFT.name]
    assert drifts == [], f"false alarms on a stable stream: {drifts}"
    assert not [m for m in result.moments if m.topic == TRAINING_REQUESTED.name], "trained without a reason"
    assert result.served["before"] > 0.9 and result.served["during"] > 0.9


async def test_make_demos_scenario_closes_the_loop_again_on_the_stack_the_tests_left(services, topics):
    """`make demo` on whatever stack it finds: here, the champion the loop above moved to the changed
    concept, so this run reuses it and its concept change goes the other way."""
    config = on_this_stack()  # what `make demo` runs
    result = await Scenario(config, Console(force_terminal=False, width=140)).run()
    report(result, config, Console(width=140))
    assert result.closed, f"the loop did not close (drift {result.drift}, accuracy {result.served})"
    assert result.first_champion not in (None, "1"), "the run trained its own first model instead of reusing"
