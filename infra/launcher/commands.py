"""What `python infra/stack.py <command>` does: install, up, down, restart, status."""

from __future__ import annotations

import sys
import time

from .component import Component, StartFailed, step
from .kafka import install_kafka, kafka_components
from .minio import install_minio, minio_component
from .mlflow import mlflow_component
from .paths import STACK
from .plan import KAFKA_NODES, keep_plan
from .processes import running_pid, start, stop, wait_healthy
from .services import replica_waves, service_components


def components() -> list[Component]:
    """The stack, in start order: the three infrastructure components, then the six services."""
    return [*kafka_components(), minio_component(), mlflow_component(), *service_components()]


def install() -> None:
    """Fetch the Kafka jars and build MinIO, once; later calls find them and do nothing.

    The jars are fetched again when infra/kafka/pom.xml changes, MinIO is rebuilt when the
    binary is not the pinned version.
    """
    install_kafka()
    install_minio()


def report_failure(failure: StartFailed) -> None:
    log_file = failure.component.log_file
    if not failure.show_log:
        print(f"\n✗ {failure.component.name} {failure.why}", file=sys.stderr)
        return
    tail = log_file.read_text(errors="replace").splitlines()[-40:] if log_file.exists() else []
    print(f"\n✗ {failure.component.name} {failure.why}; last lines of {log_file}:", file=sys.stderr)
    print("\n".join(f"    {line}" for line in tail), file=sys.stderr)


def start_and_wait(wanted: list[Component], waves: list[list[str]]) -> list[Component]:
    """Start the waves in order, each wave's components together; stop what this call started
    and exit 1 when one fails or the user interrupts."""
    by_name = {c.name: c for c in wanted}
    started: list[Component] = []
    try:
        for wave in waves:
            t0 = time.monotonic()
            processes = {}
            for name in wave:
                processes[name] = start(by_name[name])
                if processes[name] is not None:
                    started.append(by_name[name])
            for name, process in processes.items():
                wait_healthy(by_name[name], process)
                state = "started" if process else "already running"
                step(name, f"✓ {state}, healthy after {time.monotonic() - t0:.1f} s")
    except (StartFailed, KeyboardInterrupt) as failure:
        if isinstance(failure, StartFailed):
            report_failure(failure)
        for component in reversed(started):
            if stop(component):
                step(component.name, "stopped (this start failed)")
        sys.exit(1)
    return started


def up(only_infra: bool) -> None:
    """Start Kafka, MinIO and MLflow together (MLflow reaches MinIO only when artifacts move),
    then, once all three are healthy, the six services together, replica after replica."""
    started_at = time.monotonic()
    install()
    keep_plan()
    wanted = [c for c in components() if c.infra or not only_infra]
    waves = [["minio", *(node.name for node in KAFKA_NODES), "mlflow"]]
    if not only_infra:
        waves.extend(replica_waves())
    start_and_wait(wanted, waves)
    elapsed = time.monotonic() - started_at
    print()
    for component in wanted:
        print(f"  {component.name:<11} pid {running_pid(component) or '-':<8} {component.url}")
    print(f"\nstack healthy in {elapsed:.1f} s (logs in {STACK / 'logs'})")


def down() -> None:
    for component in reversed(components()):
        if stop(component):
            step(component.name, "stopped")


def restart(names: list[str]) -> None:
    """Stop and start some components (a service after a code change), leaving the rest running."""
    by_name = {c.name: c for c in components()}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        sys.exit(f"stack: unknown components {unknown}; known: {sorted(by_name)}")
    for name in names:
        stop(by_name[name])
    start_and_wait([by_name[name] for name in names], [names])


def status(only_infra: bool) -> int:
    bad = 0
    for component in components():
        if only_infra and not component.infra:
            continue
        pid = running_pid(component)
        ok = component.healthy()
        bad += not ok
        process = f"pid {pid} alive" if pid else "no process"
        step(component.name, f"{'✓ healthy' if ok else '✗ down   '}  {process:<16} {component.url}")
    return 1 if bad else 0
