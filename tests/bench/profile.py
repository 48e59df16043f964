"""`make profile`: where ingestion and serving spend their time under the bench's load (py-spy).

For each service, py-spy samples the running process (and its children) while the bench drives it:
ingestion with the ingestion bench's records, serving with the serving bench's batches of 100 from
8 clients. Each profile is written as collapsed stacks (``.bench/profile-<service>.txt``: open it in
speedscope.app, or give it to flamegraph.pl for a flame graph), and the functions that cost the most
are printed: by their own time (the leaf of the stack), and Flywheel's own functions by the time
under them. The percentages are of the service's samples while the load ran, idle waits left out.

Named loads, not run by default: ``streaming`` (serving under the streaming bench's requests on
``predictions.requests``) and ``monitoring`` (monitoring under the predictions of the batches):
``make profile SERVICES="streaming monitoring"``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from flywheel.common.settings import KafkaSettings
from tests.bench.bench_ingestion import ingestion
from tests.bench.bench_serving import MODEL, SERVING, closed_loop, ensure_model, streaming
from tests.bench.support import table
from tests.integration.test_serving_rollouts import live_applications
from tests.support.stack import recorded_pid

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / ".bench"
IDLE = ("select", "epoll", "poll (", "_run_once", "wait (threading", "sleep")  # waiting, not working
TOP = 12
PACKAGES = {"common", "schemas", "ingestion", "features", "training", "registry", "serving", "monitoring"}


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: `make install` installs it (the bench dependency group)")
    return found


def record(pid: int, out: Path) -> subprocess.Popen:
    """py-spy sampling ``pid`` and its children until it is sent SIGINT; collapsed stacks to ``out``."""
    command = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--rate",
        "250",
        "--format",
        "raw",
        "--nolineno",
    ]
    command += ["--nonblocking", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(sampler: subprocess.Popen) -> None:
    sampler.send_signal(signal.SIGINT)
    try:
        _, err = sampler.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        sampler.kill()
        raise
    if sampler.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"py-spy failed ({sampler.returncode}): {err.strip()[-500:]}")


def collapsed(path: Path) -> list[tuple[list[str], int]]:
    """The stacks of a py-spy raw profile (root first) and their sample counts, idle stacks left out."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or any(idle in frames[-1] for idle in IDLE):
            continue
        stacks.append((frames, int(count)))
    return stacks


def costs(stacks: list[tuple[list[str], int]]) -> tuple[Counter[str], Counter[str], int]:
    """Own time of each function (it is the leaf), time under each of Flywheel's functions, and the total."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    for frames, count in stacks:
        own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames if _ours(f)}:
            under[frame] += count
    return own, under, sum(count for _, count in stacks)


def _ours(frame: str) -> bool:
    """Whether a frame is Flywheel's: py-spy names a module by its package directory and file."""
    where = frame.partition(" (")[2]
    return "/flywheel/" in where or where.split("/", 1)[0] in PACKAGES


def _short(frame: str) -> str:
    """``name (path/to/package/module.py:line)`` -> ``name (package/module.py)``: one entry per function."""
    name, _, where = frame.partition(" (")
    parts = Path(where.rstrip(")").rsplit(":", 1)[0]).parts
    if "site-packages" in parts:
        parts = parts[len(parts) - parts[::-1].index("site-packages") :]
    elif "flywheel" in parts:
        parts = parts[len(parts) - parts[::-1].index("flywheel") :]
    return f"{name} ({'/'.join(parts[-3:])})"


async def profile(service: str, load: Callable[[], Awaitable[object]], load_name: str = "") -> None:
    OUT.mkdir(exist_ok=True)
    out = OUT / f"profile-{service}{load_name and '-'}{load_name}.txt"
    sampler = record(recorded_pid(service), out)
    await asyncio.sleep(1.0)  # py-spy attached
    started = time.perf_counter()
    try:
        await load()
    finally:
        stop(sampler)
    own, under, total = costs(collapsed(out))
    of = f" of {load_name}" if load_name else ""
    print(f"\n== {service} under load{of} for {time.perf_counter() - started:.1f} s: {total:,} busy samples -> {out}")
    if not total:
        raise RuntimeError(f"py-spy sampled nothing busy in {service}")
    table([(f, f"{n / total:.1%}") for f, n in own.most_common(TOP)], ("own time: function (module)", "share"))
    ours = [(f, f"{n / total:.1%}") for f, n in under.most_common(TOP)]
    table(ours, ("Flywheel's functions: time under them", "share"))


async def main(selected: list[str]) -> None:
    bootstrap = KafkaSettings().bootstrap_servers
    raw = [r for r, _ in live_applications(1000)]
    bodies = [{"records": raw[i : i + 100]} for i in range(0, 1000, 100)]

    async def batches() -> object:  # the serving bench's batches of 100 from 8 clients
        return await closed_loop(f"{SERVING}/models/{MODEL}/predict", bodies)

    if not selected or "ingestion" in selected:
        await profile("ingestion", lambda: ingestion(bootstrap, 10_000))
    if not selected or "serving" in selected:
        await ensure_model()
        await profile("serving", batches)
    if "streaming" in selected:  # the streaming bench's requests through predictions.requests
        await ensure_model()
        await profile("serving", lambda: streaming(20_000), load_name="streaming")
    if "monitoring" in selected:  # the predictions the batches make
        await ensure_model()
        await profile("monitoring", batches, load_name="batches")


if __name__ == "__main__":
    from tests.bench.__main__ import quiet
    from tests.support.stack import log_in_as_admin

    quiet()
    log_in_as_admin()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    asyncio.run(main(sys.argv[1:]))
