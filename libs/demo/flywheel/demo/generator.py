"""The demo's stream: loan applications (river's Agrawal generator) with controllable concept drift.

``python -m flywheel.demo.generator --records 2000 --drift-at 1000 --rate 50`` publishes
``RecordSubmitted`` events to ``records.raw`` at a steady rate and, ``--label-delay`` seconds
after each, its true outcome to ``labels`` (by entity), with a progress bar. The concept
switches from ``--function-before`` to ``--function-after`` at ``--drift-at`` (abruptly, or
over ``--drift-width`` records with river's ``ConceptDriftStream``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from river.datasets import synth

from flywheel.common.kafka import client_security
from flywheel.schemas import LABELS, RECORDS_RAW, LabelObserved, RecordSubmitted

FLOATS = {"salary", "commission", "hvalue", "loan"}


def loan_stream(
    *,
    seed: int = 42,
    function_before: int = 0,
    function_after: int = 2,
    drift_at: int | None = None,
    drift_width: int = 1,
    start: datetime | None = None,
    interval: timedelta = timedelta(seconds=1),
    run_id: str = "gen",
) -> Iterator[tuple[dict[str, Any], int]]:
    """(application, label) pairs as the loans data contract wants them; deterministic for a seed.

    Application ``i`` is made at ``start + i * interval``: live, the interval is the rate's,
    so event times follow the wall clock and a label observed later is later in event time too.
    """
    before = synth.Agrawal(classification_function=function_before, seed=seed)
    if drift_at is None:
        stream = before
    else:
        after = synth.Agrawal(classification_function=function_after, seed=seed + 1)
        if drift_width <= 1:  # abrupt (river's sigmoid overflows for a width of one)
            stream = itertools.chain(itertools.islice(before, drift_at), after)
        else:
            stream = synth.ConceptDriftStream(before, after, seed=seed, position=drift_at, width=drift_width)
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    for i, (x, y) in enumerate(stream):
        application = {
            "applicant_id": f"{run_id}-{i}",
            "applied_at": (start + i * interval).isoformat(),
            **{k: float(v) if k in FLOATS else int(v) for k, v in x.items()},
        }
        yield application, int(y)


async def send_label(producer: AIOKafkaProducer, label: LabelObserved) -> None:
    """Publish a label, stamped with when it was observed (now), for point-in-time joins."""
    observed = label.model_copy(update={"observed_at": datetime.now(UTC)})
    await producer.send(LABELS.name, observed.to_bytes(), key=(observed.entity_id or "").encode())


async def publish(args: argparse.Namespace) -> None:
    run_id = args.run_id or uuid.uuid4().hex[:8]
    producer = AIOKafkaProducer(
        **client_security(), bootstrap_servers=args.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    pending: deque[tuple[float, LabelObserved]] = deque()
    stream = loan_stream(
        seed=args.seed,
        function_before=args.function_before,
        function_after=args.function_after,
        drift_at=args.drift_at,
        drift_width=args.drift_width,
        start=datetime.now(UTC),
        interval=timedelta(seconds=1 / args.rate),
        run_id=run_id,
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        with Progress(*columns) as progress:
            task = progress.add_task(f"records.raw ({args.rate:g}/s)", total=args.records)
            began = time.monotonic()
            for i, (application, label) in enumerate(stream):
                if i >= args.records:
                    break
                record = {**application, "approved": label if args.label_delay <= 0 else None}
                event = RecordSubmitted(
                    producer="generator", dataset="loans", record_id=record["applicant_id"], data=record
                )
                await producer.send(RECORDS_RAW.name, event.to_bytes(), key=event.record_id.encode())
                if args.label_delay > 0:
                    observed = LabelObserved(
                        producer="generator",
                        dataset="loans",
                        label=label,
                        entity_id=application["applicant_id"],
                        record_id=application["applicant_id"],
                        **event.caused(),
                    )
                    pending.append((time.monotonic() + args.label_delay, observed))
                while pending and pending[0][0] <= time.monotonic():
                    await send_label(producer, pending.popleft()[1])
                progress.advance(task)
                if args.drift_at is not None and i + 1 == args.drift_at:
                    progress.console.print(
                        f"[yellow]concept drift: function {args.function_before} -> {args.function_after}"
                    )
                await asyncio.sleep(max(0.0, began + (i + 1) / args.rate - time.monotonic()))
            while pending:
                await asyncio.sleep(max(0.0, pending[0][0] - time.monotonic()))
                await send_label(producer, pending.popleft()[1])
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0, help="records per second")
    parser.add_argument("--drift-at", type=int, default=None, help="record index where the concept changes")
    parser.add_argument("--drift-width", type=int, default=1, help="records over which it changes (1: abrupt)")
    parser.add_argument("--function-before", type=int, default=0)
    parser.add_argument("--function-after", type=int, default=2)
    parser.add_argument("--label-delay", type=float, default=2.0, help="seconds until a label arrives; 0: inline")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--run-id", default=None, help="prefix of the applicant ids (default: random)")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    asyncio.run(publish(parser.parse_args()))


if __name__ == "__main__":
    main()
