"""A Docker engine for one run: the one that already answers, or one started here and stopped after.

Started here means: Debian's `docker.io` installed with apt-get when dockerd is missing, then
/usr/sbin/dockerd run in its own session (no systemd needed) and `docker info` polled until it
answers. Stopping it stops that pid alone, then puts back what dockerd changed on the host and
leaves behind when it stops: its iptables chains and rules (the FORWARD policy it set to DROP),
net.ipv4.ip_forward, and the docker0 bridge. An engine that was already running is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

DOCKERD = Path("/usr/sbin/dockerd")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
APT_PACKAGES = ("docker.io",)


class EngineError(RuntimeError):
    pass


def answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def apt_install(packages: list[str]) -> None:
    """Install Debian packages; refresh the package lists first only when the install fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    if subprocess.run(command, env=env, capture_output=True).returncode == 0:
        return
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise EngineError(f"apt-get install {' '.join(packages)} failed:\n{result.stdout}{result.stderr}")


def _tables(tool: str) -> str | None:
    if shutil.which(tool) is None:
        return None
    return subprocess.run([tool], capture_output=True, text=True).stdout


def _table_names(dump: str) -> list[str]:
    return [line[1:].strip() for line in dump.splitlines() if line.startswith("*")]


def _links() -> set[str]:
    return {path.name for path in Path("/sys/class/net").iterdir()}


class Engine:
    """Context manager: an engine that answers inside the block; the host as it was after it."""

    def __init__(self, log: Path, timeout_s: float = 60.0) -> None:
        self.log, self.timeout_s = log, timeout_s
        self.process: subprocess.Popen | None = None
        self.saved: dict[str, str | None] = {}
        self.links_before: set[str] = set()

    @property
    def started(self) -> bool:
        return self.process is not None

    def __enter__(self) -> Engine:
        if answers():
            print("engine: a Docker engine is running; using it (and leaving it running)", flush=True)
            return self
        if not DOCKERD.exists() or shutil.which("docker") is None:
            print("engine: installing Debian's docker.io", flush=True)
            apt_install(list(APT_PACKAGES))
        if not DOCKERD.exists():
            raise EngineError(f"{DOCKERD} is missing after installing docker.io")
        self.saved = {"iptables-save": _tables("iptables-save"), "ip6tables-save": _tables("ip6tables-save")}
        self.saved["ip_forward"] = IP_FORWARD.read_text().strip() if IP_FORWARD.exists() else None
        self.links_before = _links()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [str(DOCKERD)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.timeout_s
        while not answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text().splitlines()[-30:])
                self.__exit__(None, None, None)
                raise EngineError(f"dockerd did not start (see {self.log}):\n{tail}")
            time.sleep(0.5)
        print(f"engine: started dockerd (pid {self.process.pid})", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        pid = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._restore_host()
        print(f"engine: stopped dockerd (pid {pid}) and restored iptables, ip_forward and links", flush=True)

    def _restore_host(self) -> None:
        for tool, restore in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
            before = self.saved.get(tool)
            after = _tables(tool)
            if before is None or after is None or after == before:
                continue
            # Empty every table dockerd touched (rules, its chains, default policies), then load
            # the rules that were there before.
            for table in _table_names(after):
                subprocess.run([restore, "-t", table, "-F"], capture_output=True)
                subprocess.run([restore, "-t", table, "-X"], capture_output=True)
                for line in after.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0].splitlines():
                    if line.startswith(":") and line.split()[1] != "-":
                        subprocess.run([restore, "-t", table, "-P", line[1:].split()[0], "ACCEPT"], capture_output=True)
            if before.strip():
                subprocess.run([f"{restore}-restore"], input=before, text=True, capture_output=True)
        forward = self.saved.get("ip_forward")
        if forward is not None and IP_FORWARD.read_text().strip() != forward:
            IP_FORWARD.write_text(forward + "\n")
        for link in sorted(_links() - self.links_before):
            if link == "docker0" or link.startswith("br-"):
                with contextlib.suppress(OSError):
                    subprocess.run(["ip", "link", "delete", link], capture_output=True)
