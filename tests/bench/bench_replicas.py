"""Ingestion and serving throughput with one replica vs two, side by side on the running stack.

A second process of ingestion (records.raw -> records.validated, 5,000 records) and of serving
(/predict, 8 clients spread over the replicas) is started beside the first, the way
`make up REPLICAS=2` runs it, and stopped again, alternating three times with the one-replica
measurement. The second ingestion joins the first's consumer group and takes part of the topic's
three partitions; serving's replicas each answer their share of the clients.

What two shared cores can show: that the work is split (both replicas take traffic, nothing is lost),
and how much a second process of the same service buys when the broker, MinIO, MLflow and the other
five services run on the same two cores — a ratio near 1.0x is the machine, not the design. What they
cannot show: the near-linear gain of replicas on their own cores, which only more cores would measure.
"""

from __future__ import annotations

import contextlib

from flywheel.common.settings import KafkaSettings
from infra.launcher.plan import REPLICAS
from infra.launcher.ports import replica_ports
from tests.bench.bench_ingestion import ingestion
from tests.bench.bench_serving import MODEL, closed_loop, ensure_model
from tests.bench.support import REPEATS, ratios, spread, table
from tests.integration.test_serving_rollouts import live_applications
from tests.support.stack import replica, service_url


async def one_and_two(measure, name: str) -> tuple[list[float], list[float]]:
    """``measure(urls)`` with the service's one process, then with a second beside it, ``REPEATS`` times."""
    one, two = [], []
    for _ in range(REPEATS):
        one.append(await measure([service_url(name)]))
        with replica(name, replica_ports(2)[name]) as second:
            await measure([service_url(name), second], warm=True)  # the group rebalances, the model loads
            two.append(await measure([service_url(name), second]))
    return one, two


async def main() -> None:
    if REPLICAS != 1:
        raise SystemExit("bench_replicas starts its own second replicas: run it on a `make up` stack of one replica")
    bootstrap = KafkaSettings().bootstrap_servers
    await ensure_model()
    bodies = [{"records": [record]} for record, _ in live_applications(500)]

    async def validated(urls: list[str], warm: bool = False) -> float:
        return await ingestion(bootstrap, records=500 if warm else 5000)

    async def predicted(urls: list[str], warm: bool = False) -> float:
        if warm:
            with contextlib.suppress(RuntimeError):  # the second replica answers 503 until it holds the model
                await closed_loop([f"{url}/models/{MODEL}/predict" for url in urls], bodies[:10])
            return 0.0
        rate, _ = await closed_loop([f"{url}/models/{MODEL}/predict" for url in urls], bodies)
        return rate

    rows = []
    for name, measure, unit in (("ingestion", validated, "records/s"), ("serving", predicted, "requests/s")):
        one, two = await one_and_two(measure, name)
        gain = spread(ratios(two, one), "x", 2)
        rows.append((f"{name} ({unit})", spread(one, digits=0), spread(two, digits=0), gain))
    table(rows, (f"min / median / max of {REPEATS}", "one replica", "two replicas", "two vs one"))
