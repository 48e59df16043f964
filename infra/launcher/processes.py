"""Start and stop the stack's processes, and find them again from their pid files.

A pid file holds "<pid> <start time>": the process group leader `up` started, and when it
started (from /proc), so that a pid the system has since given to another process is not
mistaken for ours. Each component runs in its own session, so its process group id is its pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from .component import Component, SetUpFailed, StartFailed
from .credentials import inherited_env
from .paths import ROOT
from .ports import HOST


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 on (state, ppid, pgrp, ...), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None  # field 22: start time in clock ticks since boot


def _reap(pid: int) -> None:
    """Collect the exit status of a child this process started, so it is not left a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes in a process group."""
    _reap(pgid)
    if not Path("/proc/self/stat").exists():  # no procfs: ask the kernel whether the group exists
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and fields[2] == str(pgid) and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def recorded_group(component: Component) -> int | None:
    """The process group `up` started for the component, while any process of it runs."""
    try:
        pid_text, *rest = component.pid_file.read_text().split()
        pgid = int(pid_text)
    except (OSError, ValueError):
        return None
    started = _start_time(pgid)
    if started is not None and rest and started != rest[0]:
        return None  # the pid now belongs to an unrelated process
    return pgid if group_members(pgid) else None


def running_pid(component: Component) -> int | None:
    """The component's main process (its group leader), when it is alive."""
    pgid = recorded_group(component)
    return pgid if pgid is not None and pgid in group_members(pgid) else None


def start(component: Component) -> subprocess.Popen | None:
    """Start the component detached, unless it is running already (then None)."""
    if running_pid(component):
        return None
    stop(component)  # stragglers of a previous run whose main process died
    deadline = time.monotonic() + 10  # a process killed a moment ago may still be letting go of its port
    while port_in_use(component.port) and time.monotonic() < deadline:
        time.sleep(0.25)
    if port_in_use(component.port):
        raise StartFailed(
            component,
            f"cannot start: port {component.port} is in use by a process this stack did not start",
            show_log=False,
        )
    if component.prepare:
        try:
            component.prepare()
        except SetUpFailed as failure:
            raise StartFailed(component, str(failure), show_log=False) from None
    component.log_file.parent.mkdir(parents=True, exist_ok=True)
    component.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with component.log_file.open("ab") as log:
        log.write(f"\n=== stack.py: starting {component.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        process = subprocess.Popen(
            component.command(),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**inherited_env(), **component.env},
            start_new_session=True,
        )
    component.pid_file.write_text(f"{process.pid} {_start_time(process.pid) or ''}".strip() + "\n")
    return process


def port_in_use(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_healthy(component: Component, process: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + component.timeout_s
    while not component.healthy():
        if process is not None and process.poll() is not None:
            raise StartFailed(component, f"exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise StartFailed(component, f"not healthy after {component.timeout_s:.0f} s")
        time.sleep(0.25)
    if component.after_start:
        try:
            component.after_start()
        except SetUpFailed as failure:
            raise StartFailed(component, str(failure), show_log=False) from None


def stop(component: Component, grace_s: float = 15.0) -> bool:
    """SIGTERM the component's process group, SIGKILL what is left after grace_s; True if it ran."""
    pgid = recorded_group(component)
    if pgid is not None:
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait_s
            while group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not group_members(pgid):
                break
    component.pid_file.unlink(missing_ok=True)
    return pgid is not None
