"""`make bench`: run every tests/bench/bench_*.py (or those named) against the running stack.

Each benchmark prints its figures side by side with a baseline measured in the same run,
as ratios, because this machine is noisy.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
import sys
import time

import structlog

import tests.bench as package
from tests.bench.support import machine_load
from tests.support.stack import log_in_as_admin


def quiet() -> None:
    """Warnings only while measuring: logging every message slows the side it measures."""
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main(selected: list[str]) -> None:
    quiet()
    log_in_as_admin()
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("bench_"))
    for name in names:
        if selected and not any(s in name for s in selected):
            continue
        module = importlib.import_module(f"tests.bench.{name}")
        print(f"\n== {name.removeprefix('bench_')}: {(module.__doc__ or '').strip().splitlines()[0]}")
        print(f"   {machine_load()}")
        started = time.perf_counter()
        asyncio.run(module.main())
        print(f"   ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
