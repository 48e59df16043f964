"""Serving's micro-batches: concurrent requests for a model scored in one call, each answered with its own."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from flywheel.common.contracts import load_contracts
from flywheel.serving.engine import Engine
from flywheel.serving.http import create_router
from flywheel.serving.microbatch import MicroBatches
from flywheel.serving.predictlog import PredictionLog
from tests.unit.test_serving_api import MODELS, engine
from tests.unit.test_serving_engine import DATASETS, application, truth

NAME = "loans-approval"


class Counted:
    """``Engine.score``, counting its calls and the records of each."""

    def __init__(self, built: Engine) -> None:
        self.score = built.score
        self.calls: list[int] = []

    def __call__(self, name, records, request_ids):
        self.calls.append(len(records))
        return self.score(name, records, request_ids)


def request(start: int, n: int) -> tuple[list[dict], list[str]]:
    return [application(i) for i in range(start, start + n)], [f"r-{i}" for i in range(start, start + n)]


async def test_concurrent_requests_share_one_call_and_each_gets_its_own_answers_in_order() -> None:
    score = Counted(engine())
    batches = MicroBatches(score, most=1000)
    asked = [request(10 * k, k + 1) for k in range(5)]  # 1 to 5 records each
    scored = await asyncio.gather(*(batches.score(NAME, records, ids) for records, ids in asked))
    assert score.calls == [15]
    for (records, ids), (answers, logged) in zip(asked, scored, strict=True):
        assert [a.request_id for a in answers] == ids and [e.request_id for e in logged] == ids
        assert [a.prediction for a in answers] == [truth(r) for r in records]


async def test_a_lone_request_is_scored_at_once_and_the_next_in_its_own_call() -> None:
    score = Counted(engine())
    batches = MicroBatches(score, most=1000)
    first = asyncio.ensure_future(batches.score(NAME, *request(0, 2)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert score.calls == [2]  # within a turn of the loop: no timer to wait out
    assert len((await first)[0]) == 2
    await batches.score(NAME, *request(2, 3))
    assert score.calls == [2, 3]


async def test_a_batch_holds_at_most_its_limit_and_the_rest_follows_in_the_next_call() -> None:
    score = Counted(engine())
    batches = MicroBatches(score, most=5)
    asked = [request(10 * k, 3) for k in range(4)]
    scored = await asyncio.gather(*(batches.score(NAME, records, ids) for records, ids in asked))
    assert score.calls == [3, 3, 3, 3]  # 3 + 3 would pass the limit of 5
    assert [len(answers) for answers, _ in scored] == [3, 3, 3, 3]
    big = await batches.score(NAME, *request(100, 8))  # a request over the limit alone is still answered whole
    assert len(big[0]) == 8 and score.calls[-1] == 8


async def test_a_failing_model_fails_every_request_of_its_batch_and_a_cancelled_one_is_not_scored() -> None:
    def broken(name, records, request_ids):
        raise RuntimeError("the model broke")

    batches = MicroBatches(broken, most=1000)
    outcomes = await asyncio.gather(*(batches.score(NAME, *request(k, 1)) for k in range(3)), return_exceptions=True)
    assert [str(o) for o in outcomes] == ["the model broke"] * 3

    score = Counted(engine())
    batches = MicroBatches(score, most=1000)
    gone = asyncio.ensure_future(batches.score(NAME, *request(0, 4)))
    await asyncio.sleep(0)  # it has joined the batch
    stays = asyncio.ensure_future(batches.score(NAME, *request(4, 1)))
    gone.cancel()
    assert len((await stays)[0]) == 1 and score.calls == [1]
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_concurrent_http_requests_are_answered_alike_with_fewer_model_calls() -> None:
    built = engine()
    score = Counted(built)
    built.score = score  # the router's batches call through it

    async def nowhere(event) -> None:
        return None

    app = FastAPI()
    log = PredictionLog(nowhere, capacity=1000, wait_s=1.0)
    app.include_router(create_router(built, MODELS, load_contracts(DATASETS), batch_max=100, prediction_log=log))
    records = [application(i) for i in range(8)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        responses = await asyncio.gather(
            *(http.post("/predict", json={"dataset": "loans", "records": [r]}) for r in records)
        )
    answers = [response.json()["predictions"] for response in responses]
    assert [[a["prediction"] for a in answer] for answer in answers] == [[truth(r)] for r in records]
    assert len({answer[0]["prediction_id"] for answer in answers}) == 8
    assert sum(score.calls) == 8 and len(score.calls) < 8
    assert log.queue.qsize() == 8  # each answer logged once
