"""`make docs` builds the reference pages from the code, offline, and they cover everything."""

import json
import re
from pathlib import Path

import pytest

from docs.generate import SERVICES, build, settings_classes
from flywheel.common.envvars import env_vars
from flywheel.schemas import TOPICS


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    build(out)
    return out


def test_every_catalogue_topic_is_documented_with_its_event_and_key(generated):
    page = (generated / "topics.html").read_text()
    catalogue = json.loads((generated / "catalogue.json").read_text())
    for name, topic in TOPICS.items():
        assert f'id="{name}"' in page, name
        assert topic.event.__name__ in page
        assert catalogue[name] == {
            "event_type": topic.event.__name__,
            "schema_version": topic.event.SCHEMA_VERSION,
            "key": topic.key,
            "description": topic.description,
        }


def test_every_field_of_every_topics_event_is_in_the_topics_page(generated):
    page = (generated / "topics.html").read_text()
    for topic in TOPICS.values():
        for field in topic.event.model_fields:
            assert f"<code>{field}</code>" in page, f"{topic.name}: {field}"


def test_every_settings_variable_is_in_the_configuration_reference_with_its_default(generated):
    markdown = (generated / "configuration.md").read_text()
    html = (generated / "configuration.html").read_text()
    classes = settings_classes()
    assert {"ingestion", "features", "training", "registry", "serving", "monitoring", "cli"} <= set(classes)
    for cls in classes.values():
        for variable, default in env_vars(cls).items():
            assert f"`{variable}`" in markdown, variable
            assert f"<code>{variable}</code>" in html, variable
            shown = str(default) if isinstance(default, str | Path) else json.dumps(default)
            assert f"`{variable}` | `{shown}`" in markdown, variable


def test_each_service_has_its_openapi_and_asyncapi_documents(generated):
    for service in SERVICES:
        openapi = json.loads((generated / "openapi" / f"{service}.json").read_text())
        asyncapi = json.loads((generated / "asyncapi" / f"{service}.json").read_text())
        assert openapi["info"]["title"] == f"flywheel-{service}"
        assert "/health" in openapi["paths"]
        assert asyncapi["asyncapi"].startswith("3.")
    http = (generated / "http.html").read_text()
    assert all(f'id="{service}"' in http for service in SERVICES)


def test_consumed_topics_name_their_consumers(generated):
    ingestion = json.loads((generated / "asyncapi" / "ingestion.json").read_text())
    addresses = {c["address"] for c in ingestion["channels"].values()}
    assert "records.raw" in addresses
    page = (generated / "topics.html").read_text()
    section = page.split('id="records.raw"')[1].split("<h2")[0]
    assert "<b>ingestion</b>" in section


def test_pages_load_nothing_from_the_network(generated):
    for page in generated.glob("*.html"):
        text = page.read_text()
        assert "<script" not in text, page.name
        assert not re.search(r'(src|href)="(https?:)?//', text), page.name


EXTENDING = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


@pytest.mark.parametrize(
    ("section", "model_path"),
    [
        ("## Add a dataset and its data contract", "flywheel.common.contracts:DataContract"),
        ("## Add a feature set", "flywheel.common.featuresets:FeatureSet"),
        ("## Add a model spec", "flywheel.common.modelspec:ModelSpec"),
    ],
    ids=["contract", "feature set", "model spec"],
)
def test_the_extending_guides_yaml_examples_are_valid(section, model_path):
    import importlib

    import yaml

    text = EXTENDING.read_text().split(section, 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    module, name = model_path.split(":")
    assert examples
    for example in examples:
        getattr(importlib.import_module(module), name).model_validate(yaml.safe_load(example))


def test_the_docs_cover_architecture_running_and_extending():
    docs = EXTENDING.parent
    architecture = (docs / "architecture.md").read_text()
    assert architecture.count("```mermaid") == 1 and "records.raw" in architecture
    running = (docs / "running.md").read_text()
    assert "## Locally, without Docker" in running and "## With Docker Compose" in running
    extending = EXTENDING.read_text()
    for section in ("## Add a feature set", "## Add a model spec", "## Add a rollout strategy"):
        assert section in extending
    for topic in TOPICS:
        assert f"`{topic}`" in architecture or topic in architecture, f"{topic} missing from architecture.md"


def test_every_settings_class_in_the_code_is_in_the_configuration_reference():
    import importlib
    import inspect
    import pkgutil

    from pydantic_settings import BaseSettings

    import flywheel

    documented = set(settings_classes().values())
    found = set()
    for info in pkgutil.walk_packages(flywheel.__path__, prefix="flywheel."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseSettings) and cls.__module__ == module.__name__:
                found.add(cls)
    # A base class (ServiceSettings) is documented through the classes that inherit it.
    bases = {base for cls in documented for base in cls.__mro__[1:]}
    assert found - documented - bases == set()
