"""Scale out, on a three-broker Kafka (replication factor 3, min.insync.replicas 2) with two replicas of every
service (`make scale-test` starts that stack, on its own ports).

A broker and one replica of each of the six services are SIGKILLed in the middle of a stream of records,
prediction requests and late labels, while the rest of the cluster keeps working; then they are restarted.
Every output is counted by its distinct ids: nothing accepted is lost, nothing is counted twice, every
consumer group catches up. A champion change reaches both serving replicas within a second, and a canary
rollout completes while both serving replicas take the traffic; the drift -> retrain -> rollout loop closes.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from rich.console import Console

from flywheel.common.settings import KafkaSettings
from flywheel.demo.scenario import Scenario
from flywheel.schemas import MODELS_CHAMPION, MODELS_ROLLOUT, RECORDS_VALIDATED
from infra.launcher.commands import components
from infra.launcher.plan import MIN_INSYNC, REPLICATION
from tests.e2e.conftest import on_this_stack
from tests.integration.test_registry_gates import TOKEN
from tests.integration.test_replicas import until_held
from tests.integration.test_serving_rollouts import champion_and_challenger, drive_until, rollout_actions, served
from tests.integration.test_training_runs import unique
from tests.reliability.conftest import sigkill
from tests.reliability.outcomes import assert_exact, first_output, outcome, tag
from tests.reliability.traffic import SharedModel, Stream, report
from tests.support import stack
from tests.support.kafka import TopicReader

pytestmark = [pytest.mark.usefixtures("topics"), pytest.mark.timeout(600)]

SERVICES = ("ingestion", "features", "training", "registry", "serving", "monitoring")


def test_the_stack_is_a_three_broker_cluster_with_two_replicas_of_each_service():
    names = {c.name for c in components()}
    assert {"kafka", "kafka-2", "kafka-3"} <= names, "run the scale test with `make scale-test`"
    assert {f"{s}-2" for s in SERVICES} <= names
    assert REPLICATION == 3 and MIN_INSYNC == 2


async def test_a_broker_and_a_replica_of_each_service_killed_mid_stream_lose_nothing_and_count_nothing_twice(
    kafka: KafkaSettings, store_settings, model: SharedModel
):
    killed = ["kafka-2", *(f"{s}-2" for s in SERVICES)]
    async with Stream(kafka, tag("scale"), model.name) as stream:
        await stream.send(0)
        await first_output(stream, RECORDS_VALIDATED.name, "record_id")
        pids = {name: sigkill(name) for name in killed}
        await stream.send(1)  # while they are down: the other broker and replicas take it
        await stream.label()
        started = time.monotonic()
        await asyncio.to_thread(stack.restart, *killed)
        took = time.monotonic() - started
        tallies, behind, text = await outcome(
            stream,
            store_settings,
            kafka,
            f"SIGKILL {', '.join(f'{n} (pid {p})' for n, p in pids.items())} mid-stream; back in {took:.0f} s",
        )
    assert_exact(tallies, behind, text)


async def test_a_champion_change_reaches_both_serving_replicas_within_a_second(
    kafka: KafkaSettings, store_settings, services: dict[str, str]
):
    name = unique("scale-move")
    replicas = stack.replica_urls("serving")
    async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
        await champion_and_challenger(kafka, store_settings, services, name, candidate_function=0)
        await rollout_actions(rollouts, name, "started")
    for url in replicas:
        await served(url, name, "1")
    async with TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as moves:
        async with httpx.AsyncClient(base_url=services["registry"], timeout=30) as http:
            promoted = await http.post(f"/models/{name}/promote", json={"version": "2", "actor": "it"}, headers=TOKEN)
            since = time.monotonic()
            assert promoted.status_code == 200, promoted.text
        reached = await asyncio.gather(*(until_held(url, name, "2", since) for url in replicas))
        await moves.collect(lambda found: any(m["model_name"] == name for m in found), timeout=10)
    report("champion move on a cluster", f"reached both serving replicas in {max(reached):.3f} s ({reached})")
    assert max(reached) < 1.0, f"a champion move took {reached} s to reach the replicas"


async def test_a_canary_completes_while_both_serving_replicas_take_the_traffic(
    kafka: KafkaSettings, store_settings, services: dict[str, str]
):
    name = unique("scale-canary")
    replicas = stack.replica_urls("serving")
    async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
        # v1 learnt partly on another concept: v2 is about 15 points better on the traffic
        await champion_and_challenger(
            kafka, store_settings, services, name, candidate_function=0, champion_confusion=0.3
        )
        await rollout_actions(rollouts, name, "started")
        answers, events = await drive_until(replicas, kafka, name, rollouts, "promoted")
    actions = [e["action"] for e in events]
    assert actions[0] == "started" and actions[-1] == "promoted", actions
    # drive_until sends batches of 25 to each replica in turn: the one that does not run the rollout follows its
    # steps and gives the candidate the same share of its traffic
    shares = []
    for index in range(len(replicas)):
        own = [a for i, a in enumerate(answers) if i // 25 % len(replicas) == index]
        shares.append(sum(a["variant"] == "candidate" for a in own) / len(own))
    assert all(share > 0.05 for share in shares), f"the candidate's share of each replica's answers: {shares}"
    for url in replicas:  # both answer with the new champion
        await served(url, name, "2", timeout=10)
    accuracy = events[-1]["tests"]["accuracy"]
    report(
        "canary on a cluster",
        f"promoted after {len(answers)} requests over both replicas (the candidate's share of each one's answers: "
        f"{', '.join(f'{s:.0%}' for s in shares)}), on {accuracy['candidate_n']} + {accuracy['champion_n']} labels: "
        f"{events[-1]['reason']}",
    )


@pytest.mark.timeout(1200)
async def test_the_drift_retrain_rollout_loop_closes_on_the_cluster(services: dict[str, str]):
    config = on_this_stack(
        stable_records=800, max_drifted_records=12000, after_recovery_records=300, rate_per_s=60.0, timeout_s=1000
    )
    result = await Scenario(config, Console(force_terminal=False, width=140)).run()
    assert result.drift is not None, "the concept change was never detected on the cluster"
    assert result.retrain_request is not None and result.approval is not None
    assert result.new_champion is not None and result.new_champion != result.first_champion
    for url in stack.replica_urls("serving"):  # the replica the scenario did not talk to follows too
        await served(url, config.model_name, str(result.new_champion), timeout=10)
    report(
        "closed loop on a cluster",
        f"drift seen {result.detection_delay[0]} records after the change; v{result.new_champion} champion; "
        f"served accuracy {result.served}",
    )
