"""Run Flywheel's whole stack on one machine without Docker: `make up`, `make down`, `make status`.

Kafka comes from pinned Maven Central jars run on the JVM, MinIO is built from source
with `go install` at a pinned version, MLflow runs from the project's virtualenv, and the
six services run as `python -m flywheel.<name>`. Everything it downloads, writes or runs
lives under `.stack/`: the jars, the MinIO binary, data, logs and pid files.

    python infra/stack.py install            # download and build only
    python infra/stack.py up [--only infra]  # start, wait until healthy
    python infra/stack.py status             # exit 1 when any component is unhealthy
    python infra/stack.py restart training   # after changing a service's code
    python infra/stack.py down               # stop exactly what `up` started
    python infra/stack.py env                # where the stack is: FLYWHEEL_* lines a shell or test can take

A cluster: FLYWHEEL_STACK_BROKERS=3 (`make up BROKERS=3`) runs three KRaft nodes, each broker and
controller, one quorum of three voters; topics get replication factor 3 and min.insync.replicas 2.
FLYWHEEL_STACK_REPLICAS=2 (`make up REPLICAS=2`) runs each service twice, the second 100 ports up.
The plan is kept in .stack/data/plan.json for status and down; changing BROKERS needs a fresh .stack/data.

A second stack beside the first: FLYWHEEL_STACK_DIR=<dir> plus FLYWHEEL_STACK_PORT_OFFSET=<n>
(every port n up) or FLYWHEEL_STACK_<NAME>_PORT for one port (KAFKA, KAFKA_CONTROLLER, MINIO,
MINIO_CONSOLE, MLFLOW, INGESTION, ...).
FLYWHEEL_STACK_DATASETS_DIR=<dir> starts (or restarts) the services on another datasets
directory than the checkout's (a deployment whose features.yaml was edited, say).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACK = Path(os.environ.get("FLYWHEEL_STACK_DIR", ROOT / ".stack")).resolve()
VENV_BIN = Path(sys.executable).parent
KAFKA_POM = ROOT / "infra" / "kafka" / "pom.xml"
KAFKA_LIBS = STACK / "kafka" / "libs"
KAFKA_POM_STAMP = STACK / "kafka" / "pom.sha256"
MINIO_BIN = STACK / "bin" / "minio"
MINIO_MODULE, MINIO_VERSION = "github.com/minio/minio", "v0.0.0-20260212201848-7aac2a2c5b7c"
MINIO_USER, MINIO_PASSWORD = "flywheel", "flywheel-secret"
BUCKETS = ("flywheel", "mlflow")
HOST = "127.0.0.1"


PORT_OFFSET = int(os.environ.get("FLYWHEEL_STACK_PORT_OFFSET", "0"))


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"FLYWHEEL_STACK_{name.upper()}_PORT", default + PORT_OFFSET))


KAFKA_PORT = _port("kafka", 9092)
KAFKA_CONTROLLER_PORT = _port("kafka_controller", 9093)
MINIO_PORT = _port("minio", 9000)
MINIO_CONSOLE_PORT = _port("minio_console", 9001)
MLFLOW_PORT = _port("mlflow", 5000)
SERVICE_PORTS = {
    name: _port(name, default)
    for name, default in [
        ("ingestion", 8001),
        ("features", 8002),
        ("training", 8003),
        ("registry", 8004),
        ("serving", 8005),
        ("monitoring", 8006),
    ]
}

PLAN_FILE = STACK / "data" / "plan.json"  # wiped with the data it describes


def _plan(name: str) -> int:
    """How many brokers or service replicas: from the environment (``make up BROKERS=3``), else the plan
    ``up`` kept for this stack, else one."""
    if value := os.environ.get(f"FLYWHEEL_STACK_{name.upper()}"):
        return int(value)
    kept = json.loads(PLAN_FILE.read_text()) if PLAN_FILE.exists() else {}
    return int(kept.get(name, 1))


BROKERS, REPLICAS = _plan("brokers"), _plan("replicas")
REPLICATION = min(3, BROKERS)
MIN_INSYNC = 2 if BROKERS >= 3 else 1  # a write survives one broker lost, and is refused with two


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node (broker and controller in one process); node 1 is a one-node stack's Kafka."""

    id: int

    @property
    def name(self) -> str:
        return "kafka" if self.id == 1 else f"kafka-{self.id}"

    @property
    def port(self) -> int:
        return KAFKA_PORT + 2 * (self.id - 1)

    @property
    def controller_port(self) -> int:
        return KAFKA_CONTROLLER_PORT + 2 * (self.id - 1)

    @property
    def data(self) -> Path:
        return STACK / "data" / self.name

    @property
    def config(self) -> Path:
        return STACK / "kafka" / ("server.properties" if self.id == 1 else f"server-{self.id}.properties")


KAFKA_NODES = [KafkaNode(i) for i in range(1, BROKERS + 1)]
KAFKA_BOOTSTRAP = ",".join(f"{HOST}:{node.port}" for node in KAFKA_NODES)

SHARED_ENV = {
    # `make up` and `make demo` run a development stack: the services accept the well-known dev
    # credentials (flywheel.common.auth). A deployment (docker compose) gives each principal its own.
    "FLYWHEEL_DEV_MODE": "true",
    "FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS": KAFKA_BOOTSTRAP,
    "FLYWHEEL_S3_ENDPOINT_URL": f"http://{HOST}:{MINIO_PORT}",
    "FLYWHEEL_MLFLOW_TRACKING_URI": f"http://{HOST}:{MLFLOW_PORT}",
}


@dataclass
class Component:
    """One process of the stack: how to start it and how to tell it is healthy."""

    name: str
    port: int
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


class StartFailed(Exception):
    def __init__(self, component: Component, why: str, show_log: bool = True) -> None:
        super().__init__(f"{component.name} {why}")
        self.component, self.why, self.show_log = component, why, show_log


# -- health -------------------------------------------------------------------------------


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    return check


def kafka_ready(port: int = KAFKA_PORT) -> bool:
    """The broker answers an ApiVersions request (v0) on its client listener.

    A KRaft broker starts processing requests only as the last step of its startup, after it
    has caught up with the metadata log and been unfenced, so an answer means it is usable.
    """
    client_id = b"flywheel-stack"
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id  # ApiVersions v0, correlation 7
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.settimeout(2)
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            correlation_id, error_code = struct.unpack(">ih", _recv_exactly(sock, min(size, 6)))
    except (OSError, struct.error):
        return False
    return correlation_id == 7 and error_code == 0


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


# -- install ------------------------------------------------------------------------------


def install() -> None:
    """Fetch the Kafka jars and build MinIO, once; later calls find them and do nothing.

    The jars are fetched again when infra/kafka/pom.xml changes, MinIO is rebuilt when the
    binary is not the pinned version.
    """
    pom_hash = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    have_jars = any(KAFKA_LIBS.glob("kafka_2.13-*.jar"))
    stamp = KAFKA_POM_STAMP.read_text().strip() if KAFKA_POM_STAMP.exists() else None
    if not have_jars or (stamp is not None and stamp != pom_hash):
        step("kafka", "downloading the broker's jars from Maven Central")
        shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(KAFKA_POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={KAFKA_LIBS}",
                "-DincludeScope=runtime",
            ]
        )
    KAFKA_POM_STAMP.parent.mkdir(parents=True, exist_ok=True)
    KAFKA_POM_STAMP.write_text(pom_hash + "\n")
    if minio_version() != MINIO_VERSION:
        step("minio", f"building {MINIO_MODULE}@{MINIO_VERSION} with go install (a few minutes, once)")
        env = {**os.environ, "GOBIN": str(MINIO_BIN.parent), "CGO_ENABLED": "0"}
        run(["go", "install", f"{MINIO_MODULE}@{MINIO_VERSION}"], env=env)


def minio_version() -> str | None:
    """The module version `go install` recorded in the MinIO binary, None without one."""
    if not MINIO_BIN.exists():
        return None
    if shutil.which("go") is None:  # cannot tell; trust the binary that is there
        return MINIO_VERSION
    info = subprocess.run(["go", "version", "-m", str(MINIO_BIN)], capture_output=True, text=True).stdout
    for line in info.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", MINIO_MODULE] and len(fields) >= 3:
            return fields[2]
    return None


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run a download or build step; show its output only when it fails."""
    if shutil.which(command[0]) is None:
        sys.exit(f"stack: `{' '.join(command)}` failed: {command[0]} is not installed")
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.exit(f"{result.stdout}\nstack: `{' '.join(command)}` failed with code {result.returncode}")


# -- the components -----------------------------------------------------------------------


def prepare_kafka_config(node: KafkaNode) -> None:
    """The node's server.properties, from the template."""
    node.config.parent.mkdir(parents=True, exist_ok=True)
    quorum = (
        f"controller.quorum.voters=1@{HOST}:{node.controller_port}"
        if BROKERS == 1
        else "controller.quorum.bootstrap.servers=" + ",".join(f"{HOST}:{n.controller_port}" for n in KAFKA_NODES)
    )
    template = (ROOT / "infra/kafka/server.properties").read_text()
    for key, value in {
        "@DATA_DIR@": str(node.data),
        "@HOST@": HOST,
        "@KAFKA_PORT@": str(node.port),
        "@CONTROLLER_PORT@": str(node.controller_port),
        "@NODE_ID@": str(node.id),
        "@QUORUM@": quorum,
        "@REPLICATION@": str(REPLICATION),
        "@MIN_INSYNC@": str(MIN_INSYNC),
    }.items():
        template = template.replace(key, value)
    node.config.write_text(template)


def prepare_kafka(node: KafkaNode) -> None:
    """Write the node's server.properties from the template and format its storage directory once.

    A cluster's nodes are formatted with one cluster id and the same ``--initial-controllers`` list
    (each node's id, controller address and directory id, kept in ``.stack/kafka/cluster.json``), so
    the quorum is the three of them from the start and survives the loss of any one.
    """
    prepare_kafka_config(node)
    if (node.data / "meta.properties").exists():
        return
    cluster = kafka_cluster()
    voters = (
        []
        if BROKERS == 1
        else [
            "--initial-controllers",
            ",".join(f"{n.id}@{HOST}:{n.controller_port}:{cluster['directories'][str(n.id)]}" for n in KAFKA_NODES),
        ]
    )
    subprocess.run(
        [
            "java",
            *kafka_jvm_flags(),
            "-cp",
            f"{KAFKA_LIBS}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster["cluster_id"],
            *voters,
            "--config",
            str(node.config),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def kafka_uuid() -> str:
    """A Kafka Uuid as its tools print it: 16 random bytes, base64url, never starting with '-'."""
    while (text := base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")).startswith("-"):
        pass
    return text


def kafka_cluster() -> dict:
    """The cluster id and each node's storage directory id, made once per stack."""
    path = STACK / "kafka" / "cluster.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    if set(kept.get("directories", {})) != {str(n.id) for n in KAFKA_NODES}:
        if any(STACK.glob("data/kafka*/meta.properties")):
            raise SystemExit(f"stack: {STACK / 'data'} holds a Kafka of another size: BROKERS needs a fresh one")
        kept = {"cluster_id": kafka_uuid(), "directories": {str(n.id): kafka_uuid() for n in KAFKA_NODES}}
        path.write_text(json.dumps(kept, indent=2) + "\n")
    return kept


def kafka_jvm_flags() -> list[str]:
    return [
        "-Xms512m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={ROOT / 'infra/kafka/log4j2.properties'}",
    ]


def create_topics() -> None:
    """Create every catalogue topic up front with its partitions and config, so no consumer races
    auto-creation (and the dead-letter topic takes letters bigger than the broker's default)."""
    code = (
        "import asyncio\n"
        "from flywheel.common.kafka import ensure_topics\n"
        f"asyncio.run(ensure_topics('{KAFKA_BOOTSTRAP}'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def create_buckets() -> None:
    """Both buckets, and a MinIO user per service with its policy (flywheel.common.storeaccess)."""
    from minio import Minio

    from flywheel.common.storeaccess import provision, service_access

    client = Minio(f"{HOST}:{MINIO_PORT}", access_key=MINIO_USER, secret_key=MINIO_PASSWORD, secure=False)
    for bucket in BUCKETS:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    provision(f"http://{HOST}:{MINIO_PORT}", MINIO_USER, MINIO_PASSWORD, store_keys(), service_access(*BUCKETS))


def stack_secrets(file: str, users: list[str]) -> dict[str, str]:
    """A secret per user, made once per stack and kept in ``.stack/<file>`` (owner-only)."""
    from flywheel.common.storeaccess import new_secrets

    path = STACK / file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(new_secrets(users)))
        path.chmod(0o600)
    return json.loads(path.read_text())


def store_keys() -> dict[str, str]:
    """Each MinIO user's secret key (a user per service, and MLflow's)."""
    from flywheel.common.storeaccess import USERS

    return stack_secrets("minio-users.json", list(USERS))


def tracking_passwords() -> dict[str, str]:
    """Each MLflow user's password: the admin's, and one per service that uses MLflow."""
    from flywheel.common.trackingaccess import ADMIN, USERS

    return stack_secrets("mlflow-users.json", [ADMIN, *USERS])


# A login in the caller's environment (a test runs as MLflow's admin) is never passed on: each service
# gets its own from tracking_env, and one that uses no MLflow gets none.
LOGIN_VARIABLES = {f"{p}_{v}" for p in ("FLYWHEEL_MLFLOW", "MLFLOW_TRACKING") for v in ("USERNAME", "PASSWORD")}


def inherited_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in LOGIN_VARIABLES}


def tracking_env(user: str) -> dict[str, str]:
    """A service's MLflow login, as the services read it; nothing for one that uses no MLflow."""
    password = tracking_passwords().get(user)
    return {} if password is None else {"FLYWHEEL_MLFLOW_USERNAME": user, "FLYWHEEL_MLFLOW_PASSWORD": password}


MLFLOW_AUTH_CONFIG = STACK / "data" / "mlflow" / "auth.ini"


def prepare_mlflow() -> None:
    """The basic-auth app's configuration, its user store beside MLflow's own database."""
    from flywheel.common.trackingaccess import auth_config

    MLFLOW_AUTH_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    MLFLOW_AUTH_CONFIG.write_text(auth_config(f"sqlite:///{MLFLOW_AUTH_CONFIG.parent / 'auth.db'}"))


def provision_mlflow() -> None:
    """A MLflow user per service that uses MLflow (flywheel.common.trackingaccess)."""
    from flywheel.common.trackingaccess import ADMIN, provision

    passwords = tracking_passwords()
    provision(f"http://{HOST}:{MLFLOW_PORT}", passwords[ADMIN], passwords)


def store_env(user: str) -> dict[str, str]:
    """A user's MinIO key, as the services read it, and as MLflow (boto3) does."""
    secret = store_keys()[user]
    return {
        "FLYWHEEL_S3_ACCESS_KEY": user,
        "FLYWHEEL_S3_SECRET_KEY": secret,
        "MLFLOW_S3_ENDPOINT_URL": f"http://{HOST}:{MINIO_PORT}",
        "AWS_ACCESS_KEY_ID": user,
        "AWS_SECRET_ACCESS_KEY": secret,
    }


def stack_key(file: str) -> str:
    """A random 32-byte key (urlsafe base64), made once per stack and kept in ``.stack/<file>`` (owner-only)."""
    path = STACK / file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.urlsafe_b64encode(os.urandom(32)).decode())
        path.chmod(0o600)
    return path.read_text().strip()


def webhook_encryption_key() -> str:
    """The Fernet key MLflow encrypts webhook secrets with: MLflow's default is a new random key per
    process, and a restarted MLflow could then no longer sign a delivery."""
    return stack_key("mlflow-webhook.key")


def mlflow_flask_key() -> str:
    """The key MLflow's basic-auth app signs its CSRF tokens with (it refuses to start without one)."""
    return stack_key("mlflow-flask.key")


MLFLOW_WEBHOOKS = {
    # the registry listens on plain http at a loopback (or Docker network) address, which MLflow refuses unless told
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "2",  # a webhook created or disabled is obeyed within seconds, not a minute
}


def components() -> list[Component]:
    """The stack, in start order: the three infrastructure components, then the six services."""
    from flywheel.common.trackingaccess import ADMIN

    mlflow_dir = STACK / "data" / "mlflow"
    kafka = [
        Component(
            node.name,
            node.port,
            (lambda node=node: ["java", *kafka_jvm_flags(), "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(node.config)]),
            (lambda node=node: kafka_ready(node.port)),
            90,
            f"{HOST}:{node.port}",
            prepare=(lambda node=node: prepare_kafka(node)),
            # the topics once every broker is up: the last node is waited for last
            after_start=create_topics if node == KAFKA_NODES[-1] else None,
            infra=True,
        )
        for node in KAFKA_NODES
    ]
    infra = [
        *kafka,
        Component(
            "minio",
            MINIO_PORT,
            lambda: [
                str(MINIO_BIN),
                "server",
                str(STACK / "data" / "minio"),
                "--address",
                f"{HOST}:{MINIO_PORT}",
                "--console-address",
                f"{HOST}:{MINIO_CONSOLE_PORT}",
                "--quiet",
            ],
            http_ok(f"http://{HOST}:{MINIO_PORT}/minio/health/live"),
            30,
            f"http://{HOST}:{MINIO_PORT}  (console :{MINIO_CONSOLE_PORT})",
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
            MLFLOW_PORT,
            lambda: [
                str(VENV_BIN / "mlflow"),
                "server",
                "--host",
                HOST,
                "--port",
                str(MLFLOW_PORT),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination",
                "s3://mlflow",
                "--serve-artifacts",
                "--app-name",
                "basic-auth",
            ],
            http_ok(f"http://{HOST}:{MLFLOW_PORT}/health"),
            120,
            f"http://{HOST}:{MLFLOW_PORT}",
            # MLflow 3 otherwise starts seven huey job consumers (GenAI jobs, ~1.7 GB) Flywheel never uses.
            env={
                **SHARED_ENV,
                **store_env("mlflow"),
                **MLFLOW_WEBHOOKS,
                "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": webhook_encryption_key(),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "MLFLOW_AUTH_CONFIG_PATH": str(MLFLOW_AUTH_CONFIG),
                "MLFLOW_AUTH_ADMIN_PASSWORD": tracking_passwords()[ADMIN],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": mlflow_flask_key(),
            },
            prepare=prepare_mlflow,
            after_start=provision_mlflow,
            infra=True,
        ),
    ]
    services = [
        Component(
            name if replica == 1 else f"{name}-{replica}",
            port,
            (lambda name=name: [sys.executable, "-m", f"flywheel.{name}"]),
            http_ok(f"http://{HOST}:{port}/health"),
            # a service rebuilds its state before it answers (serving's online view, monitoring's
            # windows): on a loaded 2-core machine that took over 60 s
            180,
            f"http://{HOST}:{port}",
            env={
                **SHARED_ENV,
                **store_env(name),
                **tracking_env(name),
                f"{name.upper()}_PORT": str(port),
                f"{name.upper()}_LOG_FORMAT": "json",
                f"{name.upper()}_DATASETS_DIR": os.environ.get("FLYWHEEL_STACK_DATASETS_DIR", str(ROOT / "datasets")),
                # serving calls the registry's API: this stack's, wherever its port was moved
                **({"SERVING_REGISTRY_URL": f"http://{HOST}:{SERVICE_PORTS['registry']}"} if name == "serving" else {}),
                **({"REGISTRY_WEBHOOK_URL": f"http://{HOST}:{port}/mlflow/webhook"} if name == "registry" else {}),
            },
        )
        for replica in range(1, REPLICAS + 1)
        for name, port in replica_ports(replica).items()
    ]
    return infra + services


def replica_ports(replica: int) -> dict[str, int]:
    """Each service's port in replica ``replica`` (1: the service's own; each further one 100 up)."""
    return {name: port + 100 * (replica - 1) for name, port in SERVICE_PORTS.items()}


# -- processes ----------------------------------------------------------------------------
# A pid file holds "<pid> <start time>": the process group leader `up` started, and when it
# started (from /proc), so that a pid the system has since given to another process is not
# mistaken for ours. Each component runs in its own session, so its process group id is its pid.


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
        component.prepare()
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
        component.after_start()


def report_failure(failure: StartFailed) -> None:
    log_file = failure.component.log_file
    if not failure.show_log:
        print(f"\n✗ {failure.component.name} {failure.why}", file=sys.stderr)
        return
    tail = log_file.read_text(errors="replace").splitlines()[-40:] if log_file.exists() else []
    print(f"\n✗ {failure.component.name} {failure.why}; last lines of {log_file}:", file=sys.stderr)
    print("\n".join(f"    {line}" for line in tail), file=sys.stderr)


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


def step(name: str, message: str) -> None:
    print(f"  {name:<11} {message}", flush=True)


# -- commands -----------------------------------------------------------------------------


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
    then, once all three are healthy, the six services together."""
    started_at = time.monotonic()
    install()
    PLAN_FILE.parent.mkdir(parents=True, exist_ok=True)
    PLAN_FILE.write_text(json.dumps({"brokers": BROKERS, "replicas": REPLICAS}) + "\n")
    wanted = [c for c in components() if c.infra or not only_infra]
    waves = [["minio", *(node.name for node in KAFKA_NODES), "mlflow"]]
    if not only_infra:
        waves.append([c.name for c in wanted if not c.infra])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["install", "up", "down", "status", "restart", "env"])
    parser.add_argument("names", nargs="*", help="with restart: the components to restart")
    parser.add_argument("--only", choices=["infra"], help="up/status: only Kafka, MinIO and MLflow")
    args = parser.parse_args()
    if args.command == "install":
        install()
    elif args.command == "up":
        up(only_infra=args.only == "infra")
    elif args.command == "restart":
        restart(args.names)
    elif args.command == "down":
        down()
    elif args.command == "env":
        print("\n".join(f"{name}={value}" for name, value in SHARED_ENV.items()))
    else:
        sys.exit(status(only_infra=args.only == "infra"))


if __name__ == "__main__":
    main()
