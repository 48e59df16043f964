"""Shared helpers for benchmarks: a results table and latency percentiles."""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from flywheel.common.kafka import client_security
from infra.launcher.commands import components
from infra.launcher.processes import group_members, running_pid


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("   " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def mean(samples: list[float]) -> float:
    return statistics.fmean(samples)


def spread(samples: list[float | None], unit: str = "", digits: int = 1) -> str:
    """min / median / max of the samples that exist, and how many did not (e.g. never recovered)."""
    present = [s for s in samples if s is not None]
    if not present:
        return "none"
    low, mid, high = min(present), statistics.median(present), max(present)
    text = f"{low:.{digits}f} / {mid:.{digits}f} / {high:.{digits}f}{unit}"
    missing = len(samples) - len(present)
    return f"{text} ({missing} of {len(samples)} missing)" if missing else text


def machine_load() -> str:
    """The load average at the start of a benchmark: the figures mean more beside it."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


REPEATS = 3
"""Each side of a benchmark is measured this many times, alternating, so that both see the same noise."""


async def side_by_side(
    ours: Callable[[], Awaitable[float]], baseline: Callable[[], Awaitable[float]], times: int = REPEATS
) -> tuple[list[float], list[float]]:
    """Alternate the baseline and our measurement ``times`` times; the samples of each."""
    theirs_samples, ours_samples = [], []
    for _ in range(times):
        with no_client_pauses():
            theirs_samples.append(await baseline())
        with no_client_pauses():
            ours_samples.append(await ours())
    return ours_samples, theirs_samples


@contextlib.contextmanager
def no_client_pauses() -> Iterator[None]:
    """No garbage collection in this client while it measures: a full one over the libraries it has imported takes
    up to ~170 ms here, which its open loop would count as the server's latency. What it leaves is collected after."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def ratios(ours: list[float], theirs: list[float]) -> list[float | None]:
    """Each repetition's ratio, ours over the baseline measured just before it."""
    return [o / t for o, t in zip(ours, theirs, strict=True)]


async def fresh_topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    """A new topic of its own for one measurement, so that nothing else's messages are counted."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"{prefix}.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client_security(), bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def cpu_by_process(run: Callable[[], Awaitable[object]]) -> list[tuple[str, float]]:
    """CPU seconds each component of the launcher's stack (its whole process group) and this client spent while
    ``run`` ran, most first: where a path's cost lies, beside its throughput."""
    before, client = _stack_cpu(), time.process_time()
    await run()
    after = _stack_cpu()
    spent = [(name, after[name] - before[name]) for name in after if name in before]
    return sorted([*spent, ("bench client", time.process_time() - client)], key=lambda item: -item[1])


def cpu_table(title: str, spent: list[tuple[str, float]], records: int) -> float:
    """Print each process's CPU seconds (those over 0.05 s) and µs per record, then all of them together; return
    the µs of CPU per record of all the processes, those off the path too: their background work shares the cores."""
    rows = [(name, f"{seconds:.2f}", f"{seconds / records * 1e6:.0f}") for name, seconds in spent if seconds >= 0.05]
    total = sum(seconds for _, seconds in spent)
    table([*rows, ("all of them", f"{total:.2f}", f"{total / records * 1e6:.0f}")], (title, "CPU s", "µs per record"))
    return total / records * 1e6


def cpu_ceiling(per_record_us: float, baseline: list[float], aim: float, baseline_name: str = "baseline") -> str:
    """What the machine's cores allow a path whose records cost ``per_record_us`` of CPU in all: the rate with every
    core busy on it alone, as a ratio of the baseline's median rate beside the aim. An aim above that ceiling needs
    less CPU a record, not less waiting."""
    cores = os.cpu_count() or 1
    most = cores / per_record_us * 1e6
    needed = cores / (aim * statistics.median(baseline)) * 1e6
    return (
        f"   ceiling: at {per_record_us:.0f} µs of CPU a record, {cores} cores allow at most {most:,.0f} records/s, "
        f"{most / statistics.median(baseline):.2f}x of the {baseline_name}'s median; the aim of {aim:g}x needs at most "
        f"{needed:.0f} µs a record"
    )


def _stack_cpu() -> dict[str, float]:
    used = {}
    for component in components():
        if (pgid := running_pid(component)) is not None:
            used[component.name] = sum(_cpu_seconds(pid) for pid in group_members(pgid))
    return used


def _cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of /proc/<pid>/stat (fields 14 to 17), in seconds; 0 once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
