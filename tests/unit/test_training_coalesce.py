"""The coalescer: a burst becomes one run; one model never trains twice at once."""

import asyncio

from flywheel.schemas import TrainModel
from flywheel.training.coalesce import Coalescer
from flywheel.training.runs import RunBook, RunRecord


def request(model: str = "m") -> TrainModel:
    return TrainModel(model_name=model, dataset="loans", producer="test")


class Recorder:
    def __init__(self, duration: float = 0.0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.active: dict[str, int] = {}
        self.max_active: dict[str, int] = {}
        self.duration = duration

    async def __call__(self, record: RunRecord, requests: list[TrainModel]) -> None:
        model = record.model_name
        self.active[model] = self.active.get(model, 0) + 1
        self.max_active[model] = max(self.max_active.get(model, 0), self.active[model])
        self.calls.append((model, len(requests)))
        await asyncio.sleep(self.duration)
        self.active[model] -= 1


async def test_fifty_requests_in_the_window_become_one_run_with_all_of_them():
    runs, execute = RunBook(), Recorder()
    coalescer = Coalescer(0.05, execute, runs.add)
    joined = {coalescer.submit(request()).id for _ in range(50)}
    await asyncio.sleep(0.2)
    assert execute.calls == [("m", 50)]
    assert len(joined) == 1 and len(runs.list("m")) == 1 and runs.list("m")[0].merged_requests == 50


async def test_requests_during_a_run_are_queued_as_one_next_run_never_concurrent():
    runs, execute = RunBook(), Recorder(duration=0.2)
    coalescer = Coalescer(0.01, execute, runs.add)
    coalescer.submit(request())
    await asyncio.sleep(0.05)  # the first run is in flight
    for _ in range(10):
        coalescer.submit(request())
    assert coalescer.busy("m")
    await asyncio.sleep(0.6)
    assert execute.calls == [("m", 1), ("m", 10)]
    assert execute.max_active["m"] == 1


async def test_different_models_do_not_wait_for_each_other():
    execute = Recorder(duration=0.1)
    coalescer = Coalescer(0.01, execute, RunBook().add)
    coalescer.submit(request("a"))
    coalescer.submit(request("b"))
    await asyncio.sleep(0.07)
    assert execute.active == {"a": 1, "b": 1}
    await asyncio.sleep(0.1)


async def test_a_crashing_run_does_not_block_the_next_one():
    calls = []

    async def crash(record, requests):
        calls.append(len(requests))
        if len(calls) == 1:
            raise RuntimeError("boom")

    coalescer = Coalescer(0.01, crash, RunBook().add)
    coalescer.submit(request())
    await asyncio.sleep(0.05)
    coalescer.submit(request())
    await asyncio.sleep(0.05)
    assert calls == [1, 1]


async def test_release_cancels_queued_runs_and_waits_for_running_ones():
    started = asyncio.Event()

    async def execute(record, requests):
        record.status = "running"
        started.set()
        await asyncio.sleep(0.1)
        record.status = "completed"

    runs = RunBook()
    coalescer = Coalescer(0.01, execute, runs.add)
    running = coalescer.submit(request("a"))
    await started.wait()
    coalescer.debounce_s = 10.0
    queued = coalescer.submit(request("b"))
    left = await coalescer.release({"a", "b"}, timeout_s=5.0)
    assert left == [] and running.status == "completed" and queued.status == "released"
    assert not coalescer.busy("a") and not coalescer.busy("b")
