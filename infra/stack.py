"""Run Flywheel's whole stack on one machine without Docker: `make up`, `make down`, `make status`.

Kafka comes from pinned Maven Central jars run on the JVM, MinIO is built from source
with `go install` at a pinned version, MLflow runs from the project's virtualenv, and the
six services run as `python -m flywheel.<name>`. Everything it downloads, writes or runs
lives under `.stack/`: the jars, the MinIO binary, data, logs and pid files.

    python infra/stack.py install            # download and build only
    python infra/stack.py up [--only infra]  # start, wait until healthy
    python infra/stack.py status
    python infra/stack.py restart training   # after changing a service's code
    python infra/stack.py down
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACK = Path(os.environ.get("FLYWHEEL_STACK_DIR", ROOT / ".stack"))
VENV_BIN = Path(sys.executable).parent
KAFKA_LIBS = STACK / "kafka" / "libs"
MINIO_BIN = STACK / "bin" / "minio"
MINIO_MODULE = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"
MINIO_USER, MINIO_PASSWORD = "flywheel", "flywheel-secret"
BUCKETS = ("flywheel", "mlflow")

SHARED_ENV = {
    "FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "FLYWHEEL_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
    "FLYWHEEL_S3_ACCESS_KEY": MINIO_USER,
    "FLYWHEEL_S3_SECRET_KEY": MINIO_PASSWORD,
    "FLYWHEEL_MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
    "AWS_ACCESS_KEY_ID": MINIO_USER,
    "AWS_SECRET_ACCESS_KEY": MINIO_PASSWORD,
}


@dataclass
class Component:
    """One process of the stack: how to start it and how to tell it is healthy."""

    name: str
    command: Callable[[], list[str]]
    healthy: Callable[[], bool]
    timeout_s: float
    url: str
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    after_start: Callable[[], None] | None = None
    infra: bool = False

    @property
    def pid_file(self) -> Path:
        return STACK / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return STACK / "logs" / f"{self.name}.log"


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    return check


def kafka_ready() -> bool:
    """The broker accepts connections and has logged that it started."""
    try:
        socket.create_connection(("127.0.0.1", 9092), timeout=1).close()
    except OSError:
        return False
    log = STACK / "logs" / "kafka.log"
    return log.exists() and "Kafka Server started" in log.read_text(errors="replace")


# -- install ------------------------------------------------------------------------------


def install() -> None:
    """Fetch the Kafka jars and build MinIO, once; later calls find them and do nothing."""
    if not any(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        step("kafka", "downloading the broker's jars from Maven Central")
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(ROOT / "infra/kafka/pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={KAFKA_LIBS}",
                "-DincludeScope=runtime",
            ]
        )
    if not MINIO_BIN.exists():
        step("minio", f"building {MINIO_MODULE} with go install (a few minutes, once)")
        run(["go", "install", MINIO_MODULE], env={**os.environ, "GOBIN": str(MINIO_BIN.parent), "CGO_ENABLED": "0"})


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    missing = shutil.which(command[0]) is None
    if missing or subprocess.run(command, env=env).returncode != 0:
        sys.exit(f"stack: `{' '.join(command)}` failed" + (f": {command[0]} is not installed" if missing else ""))


# -- the components -----------------------------------------------------------------------


def prepare_kafka() -> None:
    data = STACK / "data" / "kafka"
    config = STACK / "kafka" / "server.properties"
    config.parent.mkdir(parents=True, exist_ok=True)
    template = (ROOT / "infra/kafka/server.properties").read_text()
    config.write_text(template.replace("@DATA_DIR@", str(data)))
    if not (data / "meta.properties").exists():
        cluster_id = uuid.uuid4().hex[:22]
        subprocess.run(
            [
                "java",
                "-cp",
                f"{KAFKA_LIBS}/*",
                *kafka_jvm_flags(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def kafka_jvm_flags() -> list[str]:
    return [
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={ROOT / 'infra/kafka/log4j2.properties'}",
    ]


def create_topics() -> None:
    """Create every catalogue topic up front with its partitions, so no consumer races auto-creation."""
    code = (
        "import asyncio\n"
        "from aiokafka.admin import AIOKafkaAdminClient, NewTopic\n"
        "from flywheel.schemas import TOPICS\n"
        "async def main():\n"
        "    admin = AIOKafkaAdminClient(bootstrap_servers='127.0.0.1:9092')\n"
        "    await admin.start()\n"
        "    try:\n"
        "        missing = set(TOPICS) - set(await admin.list_topics())\n"
        "        if missing:\n"
        "            await admin.create_topics([NewTopic(t, 3, 1) for t in sorted(missing)])\n"
        "    finally:\n"
        "        await admin.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def create_buckets() -> None:
    from minio import Minio

    client = Minio("127.0.0.1:9000", access_key=MINIO_USER, secret_key=MINIO_PASSWORD, secure=False)
    for bucket in BUCKETS:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)


def components() -> list[Component]:
    mlflow_dir = STACK / "data" / "mlflow"
    infra = [
        Component(
            "kafka",
            lambda: [
                "java",
                *kafka_jvm_flags(),
                "-cp",
                f"{KAFKA_LIBS}/*",
                "kafka.Kafka",
                str(STACK / "kafka" / "server.properties"),
            ],
            kafka_ready,
            90,
            "127.0.0.1:9092",
            prepare=prepare_kafka,
            infra=True,
        ),
        Component(
            "minio",
            lambda: [
                str(MINIO_BIN),
                "server",
                str(STACK / "data" / "minio"),
                "--address",
                "127.0.0.1:9000",
                "--console-address",
                "127.0.0.1:9001",
                "--quiet",
            ],
            http_ok("http://127.0.0.1:9000/minio/health/live"),
            30,
            "http://127.0.0.1:9000",
            env={
                "MINIO_ROOT_USER": MINIO_USER,
                "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
                "MINIO_BROWSER": "on",
                "MINIO_UPDATE": "off",
            },
            after_start=create_buckets,
            infra=True,
        ),
        Component(
            "mlflow",
            lambda: [
                str(VENV_BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                "5000",
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                "s3://mlflow",
                "--serve-artifacts",
            ],
            http_ok("http://127.0.0.1:5000/health"),
            120,
            "http://127.0.0.1:5000",
            env=SHARED_ENV,
            prepare=lambda: mlflow_dir.mkdir(parents=True, exist_ok=True),
            infra=True,
        ),
    ]
    services = [
        Component(
            name,
            (lambda name=name: [sys.executable, "-m", f"flywheel.{name}"]),
            http_ok(f"http://127.0.0.1:{port}/health"),
            60,
            f"http://127.0.0.1:{port}",
            env={
                **SHARED_ENV,
                f"{name.upper()}_PORT": str(port),
                f"{name.upper()}_LOG_FORMAT": "json",
                f"{name.upper()}_DATASETS_DIR": str(ROOT / "datasets"),
            },
        )
        for name, port in [
            ("ingestion", 8001),
            ("features", 8002),
            ("training", 8003),
            ("registry", 8004),
            ("serving", 8005),
            ("monitoring", 8006),
        ]
    ]
    return infra + services


# -- processes ----------------------------------------------------------------------------


def running_pid(component: Component) -> int | None:
    try:
        pid = int(component.pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start(component: Component) -> subprocess.Popen | None:
    if running_pid(component):
        return None
    if component.prepare:
        component.prepare()
    component.log_file.parent.mkdir(parents=True, exist_ok=True)
    component.pid_file.parent.mkdir(parents=True, exist_ok=True)
    log = component.log_file.open("ab")
    process = subprocess.Popen(
        component.command(),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **component.env},
        start_new_session=True,
    )
    component.pid_file.write_text(str(process.pid))
    return process


def wait_healthy(component: Component, process: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + component.timeout_s
    while not component.healthy():
        if process is not None and process.poll() is not None:
            fail(component, f"exited with code {process.returncode}")
        if time.monotonic() > deadline:
            fail(component, f"not healthy after {component.timeout_s:.0f} s")
        time.sleep(0.3)
    if component.after_start:
        component.after_start()


def fail(component: Component, why: str) -> None:
    tail = component.log_file.read_text(errors="replace").splitlines()[-40:] if component.log_file.exists() else []
    print(f"\n✗ {component.name} {why}; last lines of {component.log_file}:", file=sys.stderr)
    print("\n".join(f"    {line}" for line in tail), file=sys.stderr)
    stop(component)
    sys.exit(1)


def stop(component: Component, grace_s: float = 15.0) -> bool:
    pid = running_pid(component)
    component.pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    if alive(pid):
        signal_group(pid, signal.SIGKILL)
    return True


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def step(name: str, message: str) -> None:
    print(f"  {name:<11} {message}", flush=True)


# -- commands -----------------------------------------------------------------------------


def up(only_infra: bool) -> None:
    """Start in dependency order, in parallel where nothing depends: Kafka beside MinIO,
    MLflow once MinIO is up, then the six services together."""
    started_at = time.monotonic()
    install()
    by_name = {c.name: c for c in components()}
    waves = [["minio", "kafka"], ["mlflow"]]
    if not only_infra:
        waves.append([c.name for c in by_name.values() if not c.infra])
    for wave in waves:
        t0 = time.monotonic()
        processes = {name: start(by_name[name]) for name in wave}
        for name, process in processes.items():
            wait_healthy(by_name[name], process)
            state = "started" if process else "already running"
            step(name, f"✓ {state}, healthy after {time.monotonic() - t0:.1f} s  {by_name[name].url}")
    print(f"stack healthy in {time.monotonic() - started_at:.1f} s (logs in {STACK / 'logs'})")


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
    processes = {name: start(by_name[name]) for name in names}
    for name, process in processes.items():
        wait_healthy(by_name[name], process)
        step(name, f"✓ restarted  {by_name[name].url}")


def status() -> int:
    bad = 0
    for component in components():
        pid = running_pid(component)
        ok = component.healthy()
        bad += not ok
        step(component.name, f"{'✓ healthy' if ok else '✗ down'}  pid={pid or '-'}  {component.url}")
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["install", "up", "down", "status", "restart"])
    parser.add_argument("names", nargs="*", help="with restart: the components to restart")
    parser.add_argument("--only", choices=["infra"], help="start only Kafka, MinIO and MLflow")
    args = parser.parse_args()
    if args.command == "install":
        install()
    elif args.command == "up":
        up(only_infra=args.only == "infra")
    elif args.command == "restart":
        restart(args.names)
    elif args.command == "down":
        down()
    else:
        sys.exit(status())


if __name__ == "__main__":
    main()
