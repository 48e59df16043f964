"""The topic graph in docs/architecture.md is the code's, and every topic has a reader."""

from __future__ import annotations

import doctest
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker

import docs.topicgraph
from docs.generate import service_documents
from docs.topicgraph import (
    ARCHITECTURE,
    OPERATORS,
    ROLES_MODULE,
    SECURITY,
    current,
    roles_module,
    security_page,
    topic_graph,
)
from flywheel import schemas
from flywheel.common.kafka import UndeclaredTopic, create_broker, declare_publishers, publish_event
from flywheel.common.settings import KafkaSettings
from flywheel.schemas import ALERTS, DEADLETTERS, PREDICTIONS, TOPICS, AlertRaised, PredictionMade

ROOT = Path(__file__).resolve().parents[2]

# Topics whose reader is being built elsewhere, each with where. A topic listed here that has
# found its reader fails the test below, so the entry goes when the reader lands.
PENDING: dict[str, str] = {}


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, dict[str, Any]]:
    logging.disable(logging.WARNING)
    try:
        return {service: d["asyncapi"] for service, d in service_documents().items()}
    finally:
        logging.disable(logging.NOTSET)


def test_the_architecture_pages_topic_graph_is_the_one_the_code_declares(asyncapi):
    assert ARCHITECTURE.read_text() == current(asyncapi), "docs/architecture.md differs: run `make topic-graph`"


def test_the_kafka_acls_and_their_page_are_made_of_the_graph_the_code_declares(asyncapi):
    graph = topic_graph(asyncapi)
    assert ROLES_MODULE.read_text() == roles_module(graph), "topicroles.py differs: run `make topic-graph`"
    assert SECURITY.read_text() == security_page(graph), "docs/security.md differs: run `make topic-graph`"


def test_every_topic_has_a_reader_and_is_in_the_catalogue(asyncapi):
    graph = topic_graph(asyncapi)
    assert set(graph) == set(TOPICS), f"topics outside the catalogue: {set(graph) - set(TOPICS)}"
    unread = {name for name, roles in graph.items() if not roles.readers}
    assert unread - set(PENDING) == set(), f"topics nobody reads: {sorted(unread - set(PENDING))}"
    assert set(PENDING) <= unread, f"now read, drop from PENDING: {sorted(set(PENDING) - unread)}"
    for name, roles in graph.items():
        if OPERATORS in roles.readers:
            assert TOPICS[name].operators_read


def _code(service: str) -> str:
    """A service's code without its imports of the catalogue and its ``reads={...}`` declaration."""
    package = ROOT / "services" / service / "flywheel" / service
    code = "\n".join(p.read_text() for p in sorted(package.glob("*.py")))
    code = re.sub(r"from flywheel\.schemas import (\([^)]*\)|[^\n]*)", "", code)
    return re.sub(r"reads=\{[^}]*\}", "", code)


def test_what_a_service_declares_its_code_does(asyncapi):
    """A declared publisher builds the topic's event; a declared direct read uses the topic."""
    for service, spec in asyncapi.items():
        code = _code(service)
        for operation in spec["operations"].values():
            address = spec["channels"][operation["channel"]["$ref"].split("/")[-1]]["address"]
            topic = TOPICS[address]
            if operation["action"] == "send" and topic is not DEADLETTERS:  # dead letters: the shared middleware
                built = re.search(rf"\b{topic.event.__name__}\(", code)
                assert built, f"{service} declares it publishes {address}, never builds one"
            if operation.get("x-flywheel-read") == "direct":
                constant = next(k for k, v in vars(schemas).items() if v is topic)
                assert re.search(rf"\b{constant}\b", code), f"{service} declares reading {address}, never does"


async def test_publishing_on_a_topic_the_service_did_not_declare_fails():
    broker = create_broker(KafkaSettings(retry_backoff_s=0), service="declared-test")
    publishers = declare_publishers(broker, "declared-test", [ALERTS])
    assert len(publishers) == 2  # and dead letters, which every service may publish
    alert = AlertRaised(producer="t", kind="a", severity="warning", message="m", dedup_key="k")
    prediction = PredictionMade(
        producer="t",
        dataset="d",
        prediction_id="p",
        model_name="m",
        model_version="1",
        prediction=1,
        latency_ms=1,
        variant="c",
    )
    async with TestKafkaBroker(broker):
        await publish_event(broker, alert)
        with pytest.raises(UndeclaredTopic, match=PREDICTIONS.name):
            await publish_event(broker, prediction)


def test_the_graph_modules_examples_run():
    result = doctest.testmod(docs.topicgraph)
    assert result.attempted > 0 and result.failed == 0
