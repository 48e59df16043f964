"""Runs fit below the service's CPU priority, so a retrain on a shared host yields the cores to requests."""

from __future__ import annotations

import os
import threading

from flywheel.training.orchestrator import fit_pool


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_fit_threads_run_at_the_niceness_below_the_service_and_the_service_keeps_its_own() -> None:
    own = _niceness()
    with fit_pool(workers=2, niceness=10) as pool:
        seen = {pool.submit(_niceness).result() for _ in range(4)}
    assert seen == {min(19, own + 10)}
    assert _niceness() == own  # per thread: the loop that answers HTTP and heartbeats is untouched


def test_niceness_zero_leaves_fits_at_the_service_priority() -> None:
    own = _niceness()
    with fit_pool(workers=1, niceness=0) as pool:
        assert pool.submit(_niceness).result() == own
