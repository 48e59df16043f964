"""`make up BROKERS=3 REPLICAS=2`: the launcher's plan of a three-node Kafka cluster and two replicas of each
service, read as `make up` would (a fresh interpreter with the plan in its environment; nothing started)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLAN = """
import json
from infra.launcher.commands import components
from infra.launcher.kafka import prepare_kafka_config
from infra.launcher.plan import KAFKA_NODES, SHARED_ENV
for node in KAFKA_NODES:
    prepare_kafka_config(node)
print(json.dumps({
    "components": [c.name for c in components()],
    "ports": {c.name: c.port for c in components()},
    "bootstrap": SHARED_ENV["FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS"],
    "configs": {n.name: n.config.read_text() for n in KAFKA_NODES},
}))
"""


def plan(tmp_path: Path, **env: str) -> dict:
    # the default ports and plan, whatever the caller's stack moved
    variables = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_STACK_")}
    variables |= {"FLYWHEEL_STACK_DIR": str(tmp_path), **env}
    out = subprocess.run([sys.executable, "-c", PLAN], cwd=ROOT, env=variables, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_three_brokers_are_three_kraft_voters_with_three_copies_of_each_topic(tmp_path):
    found = plan(tmp_path, FLYWHEEL_STACK_BROKERS="3")
    assert found["components"][:3] == ["kafka", "kafka-2", "kafka-3"]
    assert found["bootstrap"] == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    for config in found["configs"].values():
        assert "controller.quorum.bootstrap.servers=127.0.0.1:9093,127.0.0.1:9095,127.0.0.1:9097" in config
        assert "controller.quorum.voters" not in config  # the voters are formatted in: a dynamic quorum
        assert "default.replication.factor=3" in config and "min.insync.replicas=2" in config
        assert "offsets.topic.replication.factor=3" in config
    assert "node.id=2" in found["configs"]["kafka-2"] and "127.0.0.1:9094" in found["configs"]["kafka-2"]


def test_one_broker_is_the_single_node_stack_as_before(tmp_path):
    found = plan(tmp_path)
    assert [c for c in found["components"] if c.startswith("kafka")] == ["kafka"]
    [config] = found["configs"].values()
    assert "controller.quorum.voters=1@127.0.0.1:9093" in config and "default.replication.factor=1" in config


def test_two_replicas_run_each_service_twice_a_hundred_ports_up(tmp_path):
    found = plan(tmp_path, FLYWHEEL_STACK_REPLICAS="2")
    for service, port in {"ingestion": 8001, "serving": 8005, "monitoring": 8006}.items():
        assert found["ports"][service] == port and found["ports"][f"{service}-2"] == port + 100


def test_the_plan_up_kept_is_the_one_status_and_down_read(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "plan.json").write_text(json.dumps({"brokers": 3, "replicas": 2}))
    found = plan(tmp_path)
    assert "kafka-3" in found["components"] and "registry-2" in found["components"]


def test_a_services_broker_is_given_every_address_of_the_cluster():
    from flywheel.common.kafka import create_broker
    from flywheel.common.settings import KafkaSettings

    broker = create_broker(KafkaSettings(bootstrap_servers="127.0.0.1:9092,127.0.0.1:9094"), service="plan-test")
    consumer = broker.config.broker_config.builder  # FastStream's aiokafka client factory
    assert consumer.keywords["bootstrap_servers"] == ["127.0.0.1:9092", "127.0.0.1:9094"]
