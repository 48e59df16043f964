"""Two serving replicas on the real stack: each hears every champion move (the catalogue marks
``models.champion`` as read by every replica), follows only the moves the registry made, and a forged
move changes what neither answers.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from flywheel.common.settings import KafkaSettings
from flywheel.schemas import MODELS_CHAMPION, MODELS_ROLLOUT, ChampionChanged
from tests.integration.test_registry_gates import TOKEN
from tests.integration.test_serving_rollouts import champion_and_challenger, rollout_actions, served
from tests.integration.test_training_runs import unique
from tests.support.kafka import TopicReader, producer
from tests.support.stack import component, replica

pytestmark = pytest.mark.usefixtures("topics")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def champion_held(url: str, name: str) -> str | None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return (await http.get("/models")).json().get(name, {}).get("champion_version")


async def until_held(url: str, name: str, version: str, since: float, timeout: float = 30) -> float:
    """Seconds from ``since`` until the replica at ``url`` holds ``version`` as ``name``'s champion."""
    while await champion_held(url, name) != version:
        assert time.monotonic() - since < timeout, f"{url} never held {name} v{version}"
        await asyncio.sleep(0.05)
    return time.monotonic() - since


def logged_ignoring(replica_name: str, model: str) -> bool:
    text = component("serving").log_file.parent.joinpath(f"{replica_name}.log").read_text(errors="replace")
    return any("champion move not followed" in line and model in line for line in text.splitlines())


async def test_a_champion_move_reaches_both_serving_replicas_and_a_forged_one_neither(
    kafka: KafkaSettings, store_settings, services
):
    name = unique("it-replicas")
    with replica("serving", free_port()) as second:
        async with TopicReader(kafka.bootstrap_servers, MODELS_ROLLOUT.name) as rollouts:
            await champion_and_challenger(kafka, store_settings, services, name, candidate_function=0)
            await rollout_actions(rollouts, name, "started")  # on the replica its group gave the approval
        replicas = {"serving": services["serving"], "serving-2": second}
        for url in replicas.values():
            await served(url, name, "1")

        async with TopicReader(kafka.bootstrap_servers, MODELS_CHAMPION.name) as moves:
            async with httpx.AsyncClient(base_url=services["registry"], timeout=10) as http:
                promoted = await http.post(
                    f"/models/{name}/promote", json={"version": "2", "actor": "it"}, headers=TOKEN
                )
                since = time.monotonic()
                assert promoted.status_code == 200, promoted.text
            reached = await asyncio.gather(*(until_held(url, name, "2", since) for url in replicas.values()))
            await moves.collect(lambda found: any(m["model_name"] == name for m in found), timeout=10)
        # both hold version 2 already: the one that ran the canary, and the other since the rollout started
        # (about 0.7 s here on a quiet machine: the registry's check of the move, behind MLflow's auth)
        print(f"\nchampion move reached both serving replicas in {max(reached):.3f} s ({reached})")
        assert max(reached) < 2.0, f"a champion move took {reached} s to reach the replicas"

        # a well-formed move the registry never made: version 1 back, published by anyone on the network
        forged = ChampionChanged(model_name=name, version="1", action="rollback", actor="mallory", reason="forged")
        out = await producer(kafka.bootstrap_servers)
        try:
            await out.send_and_wait(MODELS_CHAMPION.name, forged.to_bytes(), key=name.encode())
        finally:
            await out.stop()
        deadline = time.monotonic() + 30
        while not all(logged_ignoring(r, name) for r in replicas):
            assert time.monotonic() < deadline, "a replica never read the forged move"
            await asyncio.sleep(0.2)
        for url in replicas.values():
            assert await champion_held(url, name) == "2"
            await served(url, name, "2", timeout=5)
