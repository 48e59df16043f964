"""River online models on the running stack (issue 20): trained row by row, gated, served, monitored, rolled out.

The loans dataset has two model kinds side by side: ``model.yaml``'s batch gradient boosting and
``online.yaml``'s river Hoeffding tree. Here the online kind goes through the whole loop: v1 (learnt
from rows of one concept) becomes champion and is served and monitored; v2 (learnt from the concept
the traffic follows) passes the same gates, and a canary on labelled traffic promotes it.
"""

from __future__ import annotations

import mlflow
import pytest

from flywheel.common.settings import KafkaSettings
from flywheel.common.tracking import Tags
from flywheel.schemas import MODELS_APPROVED, MODELS_ROLLOUT
from tests.integration.test_registry_gates import first_champion
from tests.integration.test_serving_rollouts import drive_until, rollout_actions, served
from tests.integration.test_training_runs import (
    agrawal_rows,
    monitored_reference,
    request_training,
    unique,
    wait_for,
    wait_for_model,
    write_version,
)
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.usefixtures("topics")


async def test_an_online_model_is_gated_served_monitored_and_rolled_out_like_any_other(
    kafka: KafkaSettings, store_settings, mlflow_settings, services
):
    name = unique("it-online")
    other_concept = write_version(store_settings, agrawal_rows(1200, function=2, seed=43))
    await first_champion(kafka, services, other_concept, name, model_spec="online")
    await served(services["serving"], name, "1")
    reference = await monitored_reference(services["monitoring"], name)
    assert reference["train_accuracy"] > 0.5, reference

    async with (
        TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved,
        TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts,
    ):
        traffic_concept = write_version(store_settings, agrawal_rows(1200, function=0, seed=41))
        await request_training(services["training"], name, traffic_concept, model_spec="online")
        [approval] = await wait_for(approved, name, timeout=120)
        assert approval["version"] == "2" and all(g["passed"] for g in approval["gates"]), approval
        await rollout_actions(rollouts, name, "started")
        answers, events = await drive_until(services["serving"], kafka, name, rollouts, "promoted", function=0)
    accuracy = events[-1]["tests"]["accuracy"]
    assert accuracy["significant"] and accuracy["candidate"] > accuracy["champion"], events[-1]
    assert {a["variant"] for a in answers} == {"champion", "candidate"}
    await wait_for_model(services["registry"], name, lambda b: b["aliases"].get("champion") == "2")
    await served(services["serving"], name, "2", timeout=30)

    # what serves is river's tree, trained from the online spec and saved with skops, never pickle
    mlflow.set_tracking_uri(mlflow_settings.tracking_uri)
    info = mlflow.models.get_model_info(f"models:/{name}/2")
    assert info.flavors["sklearn"]["serialization_format"] == "skops"
    assert "flywheel.common.online.OnlineClassifier" in info.flavors["sklearn"]["skops_trusted_types"]
    run = mlflow.get_run(info.run_id)
    assert run.data.params["estimator"] == "river.tree.HoeffdingTreeClassifier"
    assert run.data.tags[Tags.MODEL_SPEC] == "online"
