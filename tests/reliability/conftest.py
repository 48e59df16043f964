"""The fault harness: SIGKILL or stop a component of the running stack by the pid the launcher recorded,
bring it back through the launcher (which waits until it is healthy), and leave the stack whole after
every test, whatever the test did.

Counts each test measured are printed at the end of the run ("reliability counts"), so a closing
note can quote them.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from flywheel.common.settings import KafkaSettings, ObjectStoreSettings
from infra.launcher.commands import components
from infra.launcher.processes import group_members
from tests.integration.conftest import kafka, mlflow_settings, services, store_settings, topics  # noqa: F401
from tests.reliability.traffic import COUNTS, SharedModel, ensure_model
from tests.support import stack

INFRA = ("kafka", "minio", "mlflow")


def unhealthy() -> list[str]:
    return [c.name for c in components() if not c.healthy()]


def sigkill(name: str) -> int:
    """SIGKILL a component's process group, as a crash would; returns the pid it had."""
    pid = stack.kill(name)
    deadline = time.monotonic() + 10
    while group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


async def restart(name: str) -> float:
    """Start a killed or stopped component again through the launcher; the seconds until it was healthy."""
    started = time.monotonic()
    try:
        await asyncio.to_thread(stack.restart, name)
    except subprocess.CalledProcessError:  # not healthy within the launcher's time on a loaded machine
        await asyncio.to_thread(stack.launch, "up")  # starts it again if it died; waits once more
    return time.monotonic() - started


async def crash_and_restart(name: str) -> float:
    """SIGKILL, then restart and wait for health; the seconds it was gone."""
    started = time.monotonic()
    sigkill(name)
    await restart(name)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def outage(name: str, seconds: float) -> AsyncIterator[None]:
    """The component is down (SIGKILL) for ``seconds`` while the body runs, then restarted and healthy.

    The body runs concurrently with the outage; the outage lasts at least ``seconds``, and at least
    as long as the body.
    """
    sigkill(name)
    down_since = time.monotonic()
    try:
        yield
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - down_since)))
    finally:
        await restart(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Faults after everything else in the run (the cheap tests fail first), and poison last of all:
    on code that cannot dead-letter a message, it wedges consumers, which the test then repairs."""
    items.sort(key=lambda item: ("tests/reliability/" in item.nodeid, "test_poison" in item.nodeid))


@pytest.fixture(autouse=True)
def whole_stack() -> Iterator[None]:
    """Before and after each test: every component healthy; a fault that broke one is repaired here."""
    broken = unhealthy()
    if broken:
        stack.launch("up")
    yield
    deadline = time.monotonic() + 30  # a restarted service may still be connecting
    while (broken := unhealthy()) and time.monotonic() < deadline:
        time.sleep(1)
    if broken:
        stack.launch("up")
        pytest.fail(f"the test left {broken} unhealthy; restarted them", pytrace=False)


@pytest.fixture(scope="session")
async def model(kafka: KafkaSettings, store_settings: ObjectStoreSettings, services) -> SharedModel:  # noqa: F811
    """One model of the loans dataset with a champion (v1) and an approved challenger (v2),
    shared by the tests that stream predictions; its name is unique to this run."""
    return await ensure_model(kafka, store_settings, services, f"rel-{uuid.uuid4().hex[:6]}")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not COUNTS:
        return
    terminalreporter.section("reliability counts")
    for line in COUNTS:
        terminalreporter.write_line(line)
