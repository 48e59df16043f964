"""/predict latency and throughput vs `mlflow models serve` on the same model; Kafka streaming inference.

Both servers get the same client (httpx, keep-alive) on this machine, in the same run:
- fixed concurrency (8 clients), single records and batches of 100: throughput and p50/p99;
- open loop at 300 requests/s of single records: p50/p99 (MLServer's CI gate: p99 < 10 ms);
- streaming: ``predictions.requests`` in, ``predictions`` out, requests per second end to end, beside
  the same messages through one plain topic (producer to consumer: the broker alone);
- the open loop and the batches alone and while training fits a loans model on 100,000 rows beside
  serving (``bench-fit-*`` models, each a champion with its monitoring reference afterwards).
Each is measured three times, alternating with its baseline: min / median / max.
Flywheel's /predict takes raw records and computes the features itself; mlflow gets the
ready feature rows, so it does strictly less work per request.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from flywheel.common.featuresets import load_feature_set
from flywheel.common.kafka import client_security
from flywheel.common.settings import KafkaSettings, MlflowSettings, ObjectStoreSettings
from flywheel.common.tracking import configure_mlflow
from flywheel.schemas import PREDICTIONS, PREDICTIONS_REQUESTS, PredictionRequested
from tests.bench.support import (
    cpu_by_process,
    cpu_ceiling,
    cpu_table,
    fresh_topic,
    percentile,
    ratios,
    side_by_side,
    spread,
    table,
)
from tests.integration.test_serving_rollouts import live_applications
from tests.integration.test_training_runs import agrawal_rows, monitored_reference, wait_for_model, write_version
from tests.support.auth import OPERATOR
from tests.support.kafka import TopicReader
from tests.support.stack import service_url

ROOT = Path(__file__).resolve().parents[2]
SERVING = service_url("serving")
MLFLOW_PORT = 5055
MODEL = "bench-serving"
CONCURRENCY = 8
DURATION_S = 8.0
STREAMED = 5000  # requests of one streaming run
FIT_ROWS = 100_000  # a loans fit on all of them, without early stopping, outlasts one open loop here


async def ensure_model() -> str:
    """A champion of ``bench-serving`` that serving answers with; trained once, then reused."""
    async with httpx.AsyncClient(timeout=30) as http:
        probe = {"records": [live_applications(1)[0][0]]}
        response = await http.post(f"{SERVING}/models/{MODEL}/predict", json=probe)
        if response.status_code == 200:
            return response.json()["predictions"][0]["model_version"]
        version = write_version(ObjectStoreSettings(), agrawal_rows(2000, 0, 5))
        body = {"dataset": "loans", "model_name": MODEL, "dataset_version": version, "reason": "bench"}
        (await http.post(f"{service_url('training')}/train", json=body, headers=OPERATOR)).raise_for_status()
        for _ in range(240):
            await asyncio.sleep(0.5)
            response = await http.post(f"{SERVING}/models/{MODEL}/predict", json=probe)
            if response.status_code == 200:
                return response.json()["predictions"][0]["model_version"]
    raise RuntimeError("serving never loaded the bench model")


async def during_a_fit(load: Callable[[], Awaitable[tuple]], version: str) -> tuple:
    """``load`` while training fits a model beside it (on the same 2 cores), from the fit's start; then waits
    out the fit's aftermath (its gates, the first champion, monitoring's reference), which is no other side's.

    Raises when the fit ended before the load did: the figures would not be those of a retrain.
    """
    name = f"bench-fit-{uuid.uuid4().hex[:8]}"
    body = {
        "dataset": "loans",
        "model_name": name,
        "dataset_version": version,
        "reason": "bench: a fit beside serving",
        # the spec's 1,000 newest rows fit in ~0.2 s, and early stopping ends a fit of this easy concept early
        "params": {"window": {"max_rows": FIT_ROWS}, "early_stopping": False},
    }
    async with httpx.AsyncClient(base_url=service_url("training"), timeout=30) as http:
        (await http.post("/train", json=body, headers=OPERATOR)).raise_for_status()

        async def status() -> str:
            runs = (await http.get("/runs", params={"model_name": name})).json()
            return runs[0]["status"] if runs else "requested"

        for _ in range(600):
            if (now := await status()) == "running":
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"the bench's fit never started ({now})")
        result = await load()
        if (now := await status()) != "running":
            raise RuntimeError(f"the bench's fit ended ({now}) before the load did: give it more rows")
    await wait_for_model(service_url("registry"), name, lambda b: "champion" in b["aliases"], 180)
    await monitored_reference(service_url("monitoring"), name, 180)
    return result


def start_mlflow_serve(version: str) -> subprocess.Popen:
    configure_mlflow(MlflowSettings(), ObjectStoreSettings())  # exports MinIO credentials for the child
    log = open(ROOT / ".stack" / "logs" / "bench-mlflow-serve.log", "w")  # noqa: SIM115 - lives with the child
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/{version}",
            "-p",
            str(MLFLOW_PORT),
            "--env-manager",
            "local",
            "--workers",
            "1",  # serving runs one process too
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": MlflowSettings().tracking_uri,
            # MLflow's own server loads only with its all-or-nothing switch on (Flywheel's services never
            # set it: they load skops with their own allow-list); the baseline needs it, here alone
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its uvicorn
        },
    )


async def wait_up(url: str, timeout: float = 120) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(1)
    raise RuntimeError(f"{url} did not come up")


async def closed_loop(url: str | list[str], bodies: list[dict]) -> tuple[float, list[float]]:
    """``CONCURRENCY`` clients sending back to back for ``DURATION_S``: requests/s and latencies (ms).

    Given several URLs (replicas of one service), the clients are spread over them evenly."""
    urls = [url] if isinstance(url, str) else url
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + DURATION_S

    async def client(http: httpx.AsyncClient, k: int) -> None:
        nonlocal errors
        i, target = k, urls[k % len(urls)]
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = await http.post(target, json=bodies[i % len(bodies)])
            latencies.append((time.perf_counter() - started) * 1000)
            errors += response.status_code != 200
            i += CONCURRENCY

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)) as http:
        for target in urls:  # warm
            await http.post(target, json=bodies[0])
        began = time.perf_counter()
        await asyncio.gather(*(client(http, k) for k in range(CONCURRENCY)))
        elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{errors} failed requests to {urls}")
    return len(latencies) / elapsed, latencies


async def open_loop(url: str, bodies: list[dict], rate: float = 300.0) -> tuple[float, list[float], int]:
    """Requests at a fixed rate regardless of answers: the latency a steady client sees, and failures."""
    latencies: list[float] = []
    failures = 0
    n = int(rate * DURATION_S)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32)) as http:
        await http.post(url, json=bodies[0])

        async def one(i: int) -> None:
            nonlocal failures
            started = time.perf_counter()
            try:
                response = await http.post(url, json=bodies[i % len(bodies)])
                failures += response.status_code != 200
            except httpx.TransportError:
                failures += 1
                return
            latencies.append((time.perf_counter() - started) * 1000)

        began = time.perf_counter()
        tasks = []
        for i in range(n):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        achieved = n / (time.perf_counter() - began)
    return achieved, latencies, failures


async def streaming(n: int = STREAMED) -> float:
    """Requests per second through predictions.requests -> serving -> predictions."""
    bootstrap = KafkaSettings().bootstrap_servers
    run = uuid.uuid4().hex[:8]
    records = [r for r, _ in live_applications(500)]
    requests = [
        PredictionRequested(
            producer="bench", dataset="loans", model_name=MODEL, request_id=f"{run}-{i}", data=records[i % len(records)]
        )
        for i in range(n)
    ]
    async with TopicReader(bootstrap, PREDICTIONS.name) as answers:
        began = time.perf_counter()
        await produce(bootstrap, PREDICTIONS_REQUESTS.name, [(r.request_id.encode(), r.to_bytes()) for r in requests])
        await answers.collect(
            lambda found: len(found) >= n, timeout=120, where=lambda b: str(b.get("request_id")).startswith(run)
        )
    return n / (time.perf_counter() - began)


async def raw_kafka(n: int = STREAMED) -> float:
    """The same requests through one plain topic, producer to consumer: what the broker alone allows."""
    bootstrap = KafkaSettings().bootstrap_servers
    topic = await fresh_topic(bootstrap, "bench.raw")
    records = [r for r, _ in live_applications(500)]
    payloads = [
        (
            f"raw-{i}".encode(),
            PredictionRequested(
                producer="bench",
                dataset="loans",
                model_name=MODEL,
                request_id=f"raw-{i}",
                data=records[i % len(records)],
            ).to_bytes(),
        )
        for i in range(n)
    ]
    consumer = AIOKafkaConsumer(topic, **client_security(), bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        began = time.perf_counter()
        await produce(bootstrap, topic, payloads)
        seen = 0
        while seen < n and time.perf_counter() - began < 120:
            batches = await consumer.getmany(timeout_ms=500)
            seen += sum(len(b) for b in batches.values())
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - began)


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        **client_security(), bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def figures(samples: list[tuple[float, list[float]]], size: int) -> str:
    """Records/s and p99 of each repetition, as min / median / max."""
    rates = spread([rate * size for rate, _ in samples], digits=0)
    return f"{rates} rec/s, p99 {spread([percentile(lat, 99) for _, lat in samples])} ms"


async def paired(ours: Callable[[], Awaitable[tuple]], theirs: Callable[[], Awaitable[tuple]]) -> tuple[list, list]:
    """Both sides REPEATS times, alternating; each repetition's full result."""
    mine, others = [], []

    async def ours_rate() -> float:
        mine.append(await ours())
        return mine[-1][0]

    async def theirs_rate() -> float:
        others.append(await theirs())
        return others[-1][0]

    await side_by_side(ours_rate, theirs_rate)
    return mine, others


async def beside_a_fit(url: str, singles: list[dict], batches: list[dict]) -> None:
    """Serving alone and while training fits beside it (at TRAINING_FIT_NICENESS), alternating."""
    version = write_version(ObjectStoreSettings(), agrawal_rows(FIT_ROWS, 0, 11))
    quiet, busy = await paired(
        lambda: open_loop(url, singles), lambda: during_a_fit(lambda: open_loop(url, singles), version)
    )
    p99 = ratios([percentile(b[1], 99) for b in busy], [percentile(q[1], 99) for q in quiet])
    rows = [
        (
            "single, open loop 300 req/s",
            f"{figures([q[:2] for q in quiet], 1)}, {sum(q[2] for q in quiet)} failed",
            f"{figures([b[:2] for b in busy], 1)}, {sum(b[2] for b in busy)} failed",
            f"p99 {spread(p99, 'x', digits=2)}",
        )
    ]
    size = len(batches[0]["records"])
    quiet, busy = await paired(
        lambda: closed_loop(url, batches), lambda: during_a_fit(lambda: closed_loop(url, batches), version)
    )
    rows.append(
        (
            f"batch {size}, {CONCURRENCY} clients",
            figures(quiet, size),
            figures(busy, size),
            f"{spread(ratios([b[0] for b in busy], [q[0] for q in quiet]), 'x', digits=2)} the records/s",
        )
    )
    table(
        rows,
        ("load (min / median / max of 3)", "flywheel alone", f"while training fits {FIT_ROWS:,} rows", "busy / alone"),
    )


async def batches_cpu(url: str, batches: list[dict], mlflow_rates: list[float]) -> None:
    """Where the CPU of one more closed loop of batches goes, by process (the aim is a ratio of the whole
    machine's work: serving shares the 2 cores with monitoring, Kafka and the clients), and the rate it allows."""
    done: list[tuple[float, list[float]]] = []

    async def one_more() -> None:
        done.append(await closed_loop(url, batches))

    spent = await cpu_by_process(one_more)
    records = len(done[0][1]) * len(batches[0]["records"])
    cost = cpu_table(f"one more closed loop of batches ({records:,} records): CPU by process", spent, records)
    print(cpu_ceiling(cost, mlflow_rates, aim=2.0, baseline_name="mlflow server"))


async def streaming_cpu(mine: list[float], plain: list[float]) -> None:
    """The streaming figures, where one more run's CPU goes (and the plain topic's), and the rate it allows."""
    print(
        f"   streaming inference (predictions.requests -> serving -> predictions): {spread(mine, digits=0)} "
        f"requests/s; one plain topic: {spread(plain, digits=0)}/s; "
        f"ratio {spread(ratios(mine, plain), 'x', digits=2)} (aim >= 0.3x)"
    )
    spent = await cpu_by_process(streaming)
    cost = cpu_table(f"one more run of {STREAMED:,} requests: CPU by process", spent, STREAMED)
    cpu_table("one more run of the plain topic", await cpu_by_process(raw_kafka), STREAMED)
    print(cpu_ceiling(cost, plain, aim=0.3, baseline_name="plain topic"))


async def main() -> None:
    version = await ensure_model()
    features = load_feature_set(ROOT / "datasets", "loans")
    raw = [r for r, _ in live_applications(1000)]
    flywheel_url = f"{SERVING}/models/{MODEL}/predict"
    mlflow_url = f"http://127.0.0.1:{MLFLOW_PORT}/invocations"

    def flywheel_bodies(size: int) -> list[dict]:
        return [{"records": raw[i : i + size]} for i in range(0, len(raw) - size + 1, max(size, 1))]

    def mlflow_bodies(size: int) -> list[dict]:
        rows = features.matrix(raw)
        return [
            {"dataframe_split": {"columns": features.names, "data": rows[i : i + size]}}
            for i in range(0, len(rows) - size + 1, max(size, 1))
        ]

    server = start_mlflow_serve(version)
    try:
        await wait_up(f"http://127.0.0.1:{MLFLOW_PORT}/ping")
        rows = []
        for size in (1, 100):
            ours, theirs = await paired(
                lambda size=size: closed_loop(flywheel_url, flywheel_bodies(size)),
                lambda size=size: closed_loop(mlflow_url, mlflow_bodies(size)),
            )
            ratio = spread(ratios([o[0] for o in ours], [t[0] for t in theirs]), "x", digits=2)
            rows.append((f"batch {size}, {CONCURRENCY} clients", figures(ours, size), figures(theirs, size), ratio))
        batch_rates_of_mlflow = [rate * size for rate, _ in theirs]  # records/s, the batches of 100
        ours, theirs = await paired(
            lambda: open_loop(flywheel_url, flywheel_bodies(1)), lambda: open_loop(mlflow_url, mlflow_bodies(1))
        )
        lower = ratios([percentile(t[1], 99) for t in theirs], [percentile(o[1], 99) for o in ours])
        rows.append(
            (
                "single, open loop 300 req/s",
                f"{figures([o[:2] for o in ours], 1)}, {sum(o[2] for o in ours)} failed",
                f"{figures([t[:2] for t in theirs], 1)}, {sum(t[2] for t in theirs)} failed",
                f"p99 {spread(lower, 'x', digits=2)} lower",
            )
        )
        table(
            rows, ("load (min / median / max of 3)", "flywheel /predict", "mlflow models serve", "flywheel vs mlflow")
        )
        await batches_cpu(flywheel_url, flywheel_bodies(100), batch_rates_of_mlflow)
    finally:
        server.terminate()
        server.wait(timeout=30)
    await beside_a_fit(flywheel_url, flywheel_bodies(1), flywheel_bodies(100))  # no baseline: mlflow stopped
    await streaming_cpu(*await side_by_side(streaming, raw_kafka))
