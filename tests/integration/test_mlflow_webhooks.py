"""MLflow's registry webhook against the running stack: a champion alias set by hand reaches the registry as a
signed delivery, and with the webhook disabled the reconciler alone still follows it
(``flywheel.registry.webhooks``, ``flywheel.registry.aliases``)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from flywheel.common.settings import KafkaSettings
from flywheel.registry.webhooks import WEBHOOK_NAME, ensure_webhook
from flywheel.schemas import MODELS_APPROVED, MODELS_CHAMPION
from tests.integration.test_only_what_passed_serves import FOLLOWED_WITHIN_S, served_champion
from tests.integration.test_registry_gates import first_champion
from tests.integration.test_training_runs import agrawal_rows, request_training, unique, wait_for, write_version
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.usefixtures("topics")

ALIAS_SET = "model_version_alias.created"
MLFLOW_CACHE_TTL_S = 2  # MLFLOW_WEBHOOK_CACHE_TTL as the launcher and compose start MLflow


async def deliveries(registry: str, event: str) -> float:
    """The registry's count of MLflow webhook deliveries of ``event`` (``/metrics``)."""
    async with httpx.AsyncClient(base_url=registry, timeout=10) as http:
        text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "flywheel_registry_webhook_deliveries_total" and sample.labels.get("event") == event:
                return sample.value
    return 0.0


async def delivered(registry: str, event: str, above: float, timeout: float) -> float:
    deadline = asyncio.get_running_loop().time() + timeout
    while (count := await deliveries(registry, event)) <= above:
        assert asyncio.get_running_loop().time() < deadline, f"no {event} delivery in {timeout:.0f} s"
        await asyncio.sleep(0.2)
    return count


async def two_approved_versions(kafka: KafkaSettings, store_settings, services, name: str) -> None:
    await first_champion(kafka, services, write_version(store_settings, agrawal_rows(1000, function=2, seed=71)), name)
    for seed, version in ((72, "2"), (73, "3")):  # one after the other: requests close together train once
        async with TopicReader(kafka.bootstrap_servers, MODELS_APPROVED.name) as approved:
            data = write_version(store_settings, agrawal_rows(1000, function=2, seed=seed))
            await request_training(services["training"], name, data)
            [approval] = await wait_for(approved, name, timeout=120)
        assert approval["version"] == version


async def test_an_alias_set_by_hand_is_followed_with_the_webhook_and_without_it(
    kafka: KafkaSettings, store_settings, mlflow_settings, services
):
    name = unique("it-webhook")
    await two_approved_versions(kafka, store_settings, services, name)
    await served_champion(services["serving"], name, "1", timeout=30)
    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri)
    [hook] = [w for w in client.list_webhooks() if w.name == WEBHOOK_NAME]
    assert hook.url.endswith("/mlflow/webhook") and {str(e) for e in hook.events} >= {ALIAS_SET}, hook

    # MLflow's own test delivery passes the registry's signature check; a forged one does not
    tested = client.test_webhook(hook.webhook_id, event=ALIAS_SET)
    assert tested.success and tested.response_status == 200, tested
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        forged = await http.post(
            "/mlflow/webhook",
            content=b'{"entity": "model_version_alias", "action": "created", "data": {}}',
            headers={"X-MLflow-Signature": "v1,Zm9yZ2Vk", "X-MLflow-Delivery-Id": "d", "X-MLflow-Timestamp": "1"},
        )
    assert forged.status_code == 401 and "refused" in forged.json()["detail"], forged.text

    # with the webhook: MLflow tells the registry, which moves the champion; serving follows
    counted = await deliveries(services["registry"], ALIAS_SET)
    async with TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as champion:
        client.set_registered_model_alias(name, "champion", "2")
        [moved] = await wait_for(champion, name, timeout=FOLLOWED_WITHIN_S)
        waited = await served_champion(services["serving"], name, "2", timeout=FOLLOWED_WITHIN_S)
    counted = await delivered(services["registry"], ALIAS_SET, above=counted, timeout=FOLLOWED_WITHIN_S)
    assert (moved["version"], moved["actor"]) == ("2", "mlflow")
    print(f"with the webhook: serving answers with v2 {waited:.1f} s after the alias was set")

    # without it (disabled in MLflow, as a lost delivery would be): the reconciler alone follows
    client.update_webhook(hook.webhook_id, status="DISABLED")
    try:
        await asyncio.sleep(MLFLOW_CACHE_TTL_S + 1)
        client.set_registered_model_alias(name, "champion", "3")
        waited = await served_champion(services["serving"], name, "3", timeout=FOLLOWED_WITHIN_S)
        print(f"without the webhook: serving answers with v3 {waited:.1f} s after the alias was set")
        await asyncio.sleep(1)
        assert await deliveries(services["registry"], ALIAS_SET) == counted, "a disabled webhook was delivered"
    finally:
        client.update_webhook(hook.webhook_id, status="ACTIVE")
    async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
        history = (await http.get(f"/models/{name}")).json()["history"]
    assert (history[-1]["version"], history[-1]["actor"]) == ("3", "mlflow")
    assert "seen by the reconciler" in history[-1]["reason"], history[-1]


def test_two_registry_replicas_starting_together_leave_one_webhook(mlflow_settings, services):
    """Each replica's start-up ``ensure_webhook``, at the same moment: both may create one, one is left."""
    client = MlflowClient(tracking_uri=mlflow_settings.tracking_uri)
    url = f"{services['registry']}/mlflow/webhook"
    for attempt in range(3):
        name = unique(f"it-webhook-race-{attempt}")
        start = threading.Barrier(2)

        def replica(name: str = name, start: threading.Barrier = start) -> str:
            start.wait(timeout=10)
            return ensure_webhook(client, url, "s3cret-of-the-test", name=name)

        with ThreadPoolExecutor(2) as pool:
            kept = {f.result(timeout=60) for f in [pool.submit(replica), pool.submit(replica)]}
        left = [w.webhook_id for w in client.list_webhooks(max_results=1000) if w.name == name]
        for webhook_id in left:
            client.delete_webhook(webhook_id)
        assert len(left) == 1 and kept == set(left), (kept, left)
