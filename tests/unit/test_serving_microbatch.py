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
from flywheel.serving.models import ServedModel
from flywheel.serving.predictlog import PredictionLog
from tests.unit.test_serving_api import MODELS, engine
from tests.unit.test_serving_engine import (
    DATASETS,
    SALARY,
    Constant,
    Harness,
    RichApproved,
    application,
    served,
    truth,
)

NAME = "loans-approval"


class Counted:
    """``Engine.score``, counting its calls and the records of each."""

    def __init__(self, built: Engine) -> None:
        self.score = built.score
        self.calls: list[int] = []

    def __call__(self, name, records, request_ids, **pinned):
        self.calls.append(len(records))
        return self.score(name, records, request_ids, **pinned)


def request(start: int, n: int) -> tuple[list[dict], list[str]]:
    return [application(i) for i in range(start, start + n)], [f"r-{i}" for i in range(start, start + n)]


def batches_of(built: Engine, most: int = 1000) -> tuple[MicroBatches, Counted, ServedModel]:
    score = Counted(built)
    return MicroBatches(score, most), score, built.champions[NAME]


async def test_concurrent_requests_share_one_call_and_each_gets_its_own_answers_in_order() -> None:
    batches, score, champion = batches_of(engine())
    asked = [request(10 * k, k + 1) for k in range(5)]  # 1 to 5 records each
    scored = await asyncio.gather(*(batches.score(champion, records, ids) for records, ids in asked))
    assert score.calls == [15]
    for (records, ids), (answers, logged) in zip(asked, scored, strict=True):
        assert [a.request_id for a in answers] == ids and [e.request_id for e in logged] == ids
        assert [a.prediction for a in answers] == [truth(r) for r in records]


async def test_a_lone_request_is_scored_at_once_and_the_next_in_its_own_call() -> None:
    batches, score, champion = batches_of(engine())
    first = asyncio.ensure_future(batches.score(champion, *request(0, 2)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert score.calls == [2]  # within a turn of the loop: no timer to wait out
    assert len((await first)[0]) == 2
    await batches.score(champion, *request(2, 3))
    assert score.calls == [2, 3]


async def test_a_batch_holds_at_most_its_limit_and_the_rest_follows_in_the_next_call() -> None:
    batches, score, champion = batches_of(engine(), most=5)
    asked = [request(10 * k, 3) for k in range(4)]
    scored = await asyncio.gather(*(batches.score(champion, records, ids) for records, ids in asked))
    assert score.calls == [3, 3, 3, 3]  # 3 + 3 would pass the limit of 5
    assert [len(answers) for answers, _ in scored] == [3, 3, 3, 3]
    big = await batches.score(champion, *request(100, 8))  # a request over the limit alone is still answered whole
    assert len(big[0]) == 8 and score.calls[-1] == 8


async def test_a_request_the_model_cannot_score_fails_alone_and_its_errors_count_once() -> None:
    class FailsOnSalaryZero(RichApproved):
        def predict_proba(self, matrix):
            if any(row[SALARY] == 0 for row in matrix):
                raise ValueError("salary 0 cannot be scored")
            return super().predict_proba(matrix)

    built = engine()
    built.champions[NAME] = served("1", FailsOnSalaryZero())
    batches, score, champion = batches_of(built)
    asked = [request(10 * k, 2) for k in range(3)]
    asked[1][0][1]["salary"] = 0.0
    outcomes = await asyncio.gather(
        *(batches.score(champion, records, ids) for records, ids in asked), return_exceptions=True
    )
    assert isinstance(outcomes[1], ValueError) and "salary 0" in str(outcomes[1])
    assert [len(o[0]) for o in (outcomes[0], outcomes[2])] == [2, 2]
    assert score.calls == [6, 2, 2, 2]  # the batch, then each request alone
    assert built.live[NAME].errors == 2  # the failing request's records, not the batch's


async def test_a_cancelled_request_is_not_scored_and_the_others_of_its_batch_are() -> None:
    batches, score, champion = batches_of(engine())
    tasks = [asyncio.ensure_future(batches.score(champion, *request(10 * k, k + 1))) for k in range(3)]
    await asyncio.sleep(0)  # all three have joined one batch, not yet scored
    tasks[1].cancel()
    first, third = await tasks[0], await tasks[2]
    assert score.calls == [1 + 3] and (len(first[0]), len(third[0])) == (1, 3)
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]


async def test_the_champion_that_checked_a_request_answers_it_though_another_serves_by_then() -> None:
    built = engine()
    batches, _, checked = batches_of(built)
    waiting = asyncio.ensure_future(batches.score(checked, *request(0, 2)))
    await asyncio.sleep(0)
    built.champions[NAME] = served("2", RichApproved())  # a promotion lands before the batch is scored
    answers, logged = await waiting
    assert {a.model_version for a in answers} == {"1"} == {e.model_version for e in logged}
    answers, _ = await batches.score(built.champions[NAME], *request(2, 1))
    assert answers[0].model_version == "2"


async def test_each_request_gets_back_its_own_shadow_entries_beside_its_served_ones() -> None:
    h = Harness(served("2", Constant(1)), strategy="shadow")
    await h.engine.start_rollout(h.approve())
    batches, score, champion = batches_of(h.engine)
    asked = [request(10 * k, 2) for k in range(3)]
    scored = await asyncio.gather(*(batches.score(champion, records, ids) for records, ids in asked))
    assert score.calls == [6]
    for (_, ids), (answers, logged) in zip(asked, scored, strict=True):
        assert [a.variant for a in answers] == ["champion", "champion"]
        assert sorted((e.request_id, e.variant) for e in logged) == sorted(
            (rid, variant) for rid in ids for variant in ("champion", "shadow")
        )


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
