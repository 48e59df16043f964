"""Kafka: pinned Maven Central jars run on the JVM, one KRaft node (broker and controller) per process."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys

from .component import Component, SetUpFailed, run_build_step, step
from .credentials import kafka_env, kafka_passwords
from .paths import ROOT, STACK
from .plan import BROKERS, KAFKA_BOOTSTRAP, KAFKA_NODES, MIN_INSYNC, REPLICATION, KafkaNode
from .ports import HOST, KAFKA_PORT

KAFKA_POM = ROOT / "infra" / "kafka" / "pom.xml"
KAFKA_LIBS = STACK / "kafka" / "libs"
KAFKA_POM_STAMP = STACK / "kafka" / "pom.sha256"


def install_kafka() -> None:
    """Fetch the broker's jars once, and again when infra/kafka/pom.xml changes."""
    pom_hash = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    have_jars = any(KAFKA_LIBS.glob("kafka_2.13-*.jar"))
    stamp = KAFKA_POM_STAMP.read_text().strip() if KAFKA_POM_STAMP.exists() else None
    if not have_jars or (stamp is not None and stamp != pom_hash):
        step("kafka", "downloading the broker's jars from Maven Central")
        shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
        run_build_step(
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


def prepare_kafka_config(node: KafkaNode) -> None:
    """The node's server.properties, from the template."""
    from flywheel.common.kafkaaccess import ADMIN

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
        "@ADMIN_PASSWORD@": kafka_passwords()[ADMIN],
    }.items():
        template = template.replace(key, value)
    node.config.touch(mode=0o600)  # it holds the admin's password
    node.config.chmod(0o600)
    node.config.write_text(template)


def prepare_kafka(node: KafkaNode) -> None:
    """Write the node's server.properties from the template and format its storage directory once.

    A cluster's nodes are formatted with one cluster id and the same ``--initial-controllers`` list
    (each node's id, controller address and directory id, kept in ``.stack/kafka/cluster.json``), so
    the quorum is the three of them from the start and survives the loss of any one.
    """
    from flywheel.common.kafkaaccess import ADMIN

    prepare_kafka_config(node)
    formatted_with_login = node.data.parent / f"{node.data.name}.admin-login"  # beside it: Kafka owns the inside
    if (node.data / "meta.properties").exists():
        if not formatted_with_login.exists():
            raise SetUpFailed(
                f"cannot start: {node.data} holds a Kafka made before its logins (SASL/SCRAM), which cannot be added "
                f"to it. Stop the stack (make down) and remove {STACK / 'data'} (Kafka's offsets are in the datasets' "
                "manifests, so the whole of it goes), then start it again"
            )
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
    # the admin's login, the one the brokers and Access.java start from (the others are made as the admin), is
    # added by FormatStorage.java from the environment: on a command line any local user could read it
    formatted = subprocess.run(
        [
            "java",
            *kafka_jvm_flags(),
            "-cp",
            f"{KAFKA_LIBS}/*",
            str(ROOT / "infra/kafka/FormatStorage.java"),
            "format",
            "--cluster-id",
            cluster["cluster_id"],
            *voters,
            "--config",
            str(node.config),
        ],
        env={**os.environ, "FLYWHEEL_KAFKA_ADMIN_PASSWORD": kafka_passwords()[ADMIN]},
        stdout=subprocess.DEVNULL,
    )
    if formatted.returncode != 0:
        raise SetUpFailed(f"could not format its storage {node.data} (exit {formatted.returncode})")
    formatted_with_login.touch()


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


def provision_access() -> None:
    """Each principal's SCRAM login and the ACLs of the topic graph (flywheel.common.kafkaaccess), made as the
    admin (infra/kafka/Access.java, on the broker's jars); then the topics."""
    from flywheel.common.kafkaaccess import ADMIN, plan
    from flywheel.common.topicroles import ROLES

    passwords = kafka_passwords()
    path = STACK / "kafka" / "access.plan"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(plan(passwords[ADMIN], passwords, ROLES))
    access = ROOT / "infra/kafka/Access.java"
    made = subprocess.run(["java", "-cp", f"{KAFKA_LIBS}/*", str(access), KAFKA_BOOTSTRAP, str(path)])
    if made.returncode != 0:
        raise SetUpFailed(
            f"could not set its logins and ACLs (Access.java, exit {made.returncode}). A Kafka started before its "
            f"logins (SASL/SCRAM) existed? Stop the stack (make down), remove {STACK / 'data'} and start it again"
        )
    create_topics()


def create_topics() -> None:
    """Create every catalogue topic up front with its partitions and config, so no consumer races
    auto-creation (and the dead-letter topic takes letters bigger than the broker's default)."""
    code = (
        "import asyncio\n"
        "from flywheel.common.kafka import ensure_topics\n"
        f"asyncio.run(ensure_topics('{KAFKA_BOOTSTRAP}'))\n"
    )
    from flywheel.common.kafkaaccess import ADMIN

    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, **kafka_env(ADMIN)})


def kafka_components() -> list[Component]:
    """One component per KRaft node, in node order."""
    return [
        Component(
            node.name,
            node.port,
            (lambda node=node: ["java", *kafka_jvm_flags(), "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(node.config)]),
            (lambda node=node: kafka_ready(node.port)),
            90,
            f"{HOST}:{node.port}",
            prepare=(lambda node=node: prepare_kafka(node)),
            # the topics once every broker is up: the last node is waited for last
            after_start=provision_access if node == KAFKA_NODES[-1] else None,
            infra=True,
        )
        for node in KAFKA_NODES
    ]
