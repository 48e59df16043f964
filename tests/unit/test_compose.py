"""docker-compose.yml deploys the same nine components, each configured completely, from images
whose build context holds every file they need; docker-compose.cluster.yml over it makes Kafka three
nodes of one quorum and each service two replicas (`make compose-test` runs both deployments)."""

import fnmatch
import importlib
import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from flywheel.common.envvars import env_vars

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["ingestion", "features", "training", "registry", "serving", "monitoring"]
THIRD_PARTY = {"kafka": "FLYWHEEL_KAFKA_IMAGE", "minio": "FLYWHEEL_MINIO_IMAGE"}
THIRD_PARTY_PROFILED = {"prometheus": "FLYWHEEL_PROMETHEUS_IMAGE", "grafana": "FLYWHEEL_GRAFANA_IMAGE"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags (`!override`, `!reset`), each read as the value it tags."""


def _tagged(loader: ComposeLoader, node: yaml.Node) -> object:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!override", "!reset"):
    ComposeLoader.add_constructor(_tag, _tagged)


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.load((ROOT / "docker-compose.cluster.yml").read_text(), Loader=ComposeLoader)


def settings_class(service: str) -> type:
    module = importlib.import_module(f"flywheel.{service}.settings")
    return getattr(module, f"{service.capitalize()}Settings")


def test_compose_names_all_nine_components(compose):
    assert {"kafka", "minio", "mlflow", *SERVICES} <= set(compose["services"])


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_gets_every_variable_its_settings_read(compose, service):
    spec = compose["services"][service]
    environment = spec["environment"]
    missing = sorted(set(env_vars(settings_class(service))) - set(environment))
    assert missing == [], f"{service} in docker-compose.yml lacks {missing}"
    assert environment["SERVICE"] == service


def test_the_trusted_model_modules_in_compose_are_the_code_s_default(compose):
    """Compose spells the allow-list out (an operator edits it there); it must not drift from the code's."""
    from flywheel.common.safemodels import TRUSTED_MODULES

    for service in SERVICES:
        listed = compose["services"][service]["environment"]["FLYWHEEL_MLFLOW_TRUSTED_MODULES"]
        assert json.loads(listed) == list(TRUSTED_MODULES), service


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_waits_for_healthy_dependencies_and_has_a_health_check(compose, service):
    spec = compose["services"][service]
    assert spec["depends_on"]["kafka"]["condition"] == "service_healthy"
    if service in ("ingestion", "features"):  # they use no MLflow, and do not wait for it
        assert "mlflow" not in spec["depends_on"]
    else:
        assert spec["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert spec["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    assert "/app/bin/healthcheck.py" in spec["healthcheck"]["test"]
    port = str(settings_class(service)().port)
    assert spec["environment"][f"{service.upper()}_PORT"] == port
    published = f"${{FLYWHEEL_PUBLISH_ADDRESS:-127.0.0.1}}:${{FLYWHEEL_STACK_{service.upper()}_PORT:-{port}}}:{port}"
    assert spec["ports"] == [published]


@pytest.mark.parametrize("component", ["kafka", "minio", "mlflow"])
def test_infrastructure_has_health_checks(compose, component):
    assert compose["services"][component]["healthcheck"]["test"]


def test_every_published_port_binds_the_publish_address(compose, cluster):
    for name, spec in [*compose["services"].items(), *cluster["services"].items()]:
        for port in spec.get("ports", []):
            assert port.startswith("${FLYWHEEL_PUBLISH_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port}"


@pytest.mark.parametrize("service", [*THIRD_PARTY, *THIRD_PARTY_PROFILED])
def test_every_third_party_image_is_named_by_a_variable(compose, service):
    variable = {**THIRD_PARTY, **THIRD_PARTY_PROFILED}[service]
    assert compose["services"][service]["image"].startswith(f"${{{variable}:-")


def test_prometheus_and_grafana_are_a_profile_and_the_rest_is_not(compose):
    profiled = {name for name, spec in compose["services"].items() if spec.get("profiles")}
    assert profiled == set(THIRD_PARTY_PROFILED)


def test_images_built_from_the_dockerfile_name_their_base_and_extra_certificates(compose):
    built = {name: spec for name, spec in compose["services"].items() if "build" in spec}
    assert {"bootstrap", "mlflow", *SERVICES} <= set(built)
    for spec in built.values():
        assert spec["image"] == "${FLYWHEEL_IMAGE:-flywheel:latest}"
        assert set(spec["build"]["args"]) == {"BASE_IMAGE", "EXTRA_CA_CERTS"}


def test_prometheus_finds_every_replica_of_each_service_by_its_compose_name_and_port(compose):
    """One DNS lookup (type A: every container of the name) per service, labelled with the name looked up."""
    [job] = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())["scrape_configs"]
    lookups = {(name, sd["port"]) for sd in job["dns_sd_configs"] if sd["type"] == "A" for name in sd["names"]}
    assert lookups == {(s, int(compose["services"][s]["environment"][f"{s.upper()}_PORT"])) for s in SERVICES}
    assert {"source_labels": ["__meta_dns_name"], "target_label": "service"} in job["relabel_configs"]


# -- the cluster override -------------------------------------------------------------------

KAFKA_NODES = {"kafka": 1, "kafka-2": 2, "kafka-3": 3}
BROKERS = "kafka:9092,kafka-2:9092,kafka-3:9092"


def test_the_cluster_runs_three_kafka_nodes_in_one_quorum_with_three_copies_of_each_topic(compose, cluster):
    base = compose["services"]["kafka"]
    envs = {name: {**base["environment"], **cluster["services"][name]["environment"]} for name in KAFKA_NODES}
    for name, node in KAFKA_NODES.items():
        env, spec = envs[name], cluster["services"][name]
        assert env["KAFKA_NODE_ID"] == str(node) and env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith(f"PLAINTEXT://{name}:9092,HOST://")
        for setting in ("DEFAULT", "OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC"):
            assert env[f"KAFKA_{setting}_REPLICATION_FACTOR"] == "3", setting
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        if name != "kafka":
            assert spec["extends"] == {"file": "docker-compose.yml", "service": "kafka"}
            variable = f"FLYWHEEL_STACK_{name.upper().replace('-', '_')}_PORT"
            assert spec["ports"] == [
                f"${{FLYWHEEL_PUBLISH_ADDRESS:-127.0.0.1}}:${{{variable}:-{9090 + 2 * node}}}:9094"
            ]
            assert spec["volumes"] == [f"{name}-data:/var/lib/kafka/data"]
    assert len({env["CLUSTER_ID"] for env in envs.values()}) == 1


@pytest.mark.parametrize("service", SERVICES)
def test_the_cluster_runs_two_replicas_of_each_service_under_its_name(compose, cluster, service):
    """The second extends the first, publishes the port 100 up (as `make up REPLICAS=2`), answers to the
    service's name (Prometheus' lookups, MLflow's webhook, serving's registry URL) and starts once the first is
    healthy; both know all three brokers."""
    second = cluster["services"][f"{service}-2"]
    port = int(compose["services"][service]["environment"][f"{service.upper()}_PORT"])
    variable = f"FLYWHEEL_STACK_{service.upper()}_2_PORT"
    assert second["extends"] == {"file": "docker-compose.yml", "service": service}
    assert second["ports"] == [f"${{FLYWHEEL_PUBLISH_ADDRESS:-127.0.0.1}}:${{{variable}:-{port + 100}}}:{port}"]
    assert second["networks"]["default"]["aliases"] == [service]
    assert second["depends_on"][service]["condition"] == "service_healthy"
    for spec in (cluster["services"][service], second):
        assert spec["environment"]["FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS"] == BROKERS


def test_the_cluster_makes_its_topics_once_all_three_brokers_are_up(cluster):
    bootstrap = cluster["services"]["bootstrap"]
    assert bootstrap["environment"]["FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS"] == BROKERS
    assert bootstrap["environment"]["BOOTSTRAP_KAFKA_BROKERS"] == "3"
    assert all(bootstrap["depends_on"][n]["condition"] == "service_healthy" for n in ("kafka-2", "kafka-3"))


def test_the_registry_replicas_share_one_required_webhook_secret_and_command_secret(compose):
    registry = compose["services"]["registry"]["environment"]
    assert registry["REGISTRY_WEBHOOK_SECRET"].startswith("${REGISTRY_WEBHOOK_SECRET:?")
    assert registry["REGISTRY_COMMAND_SECRET"].startswith("${REGISTRY_COMMAND_SECRET:?")
    assert registry["REGISTRY_WEBHOOK_URL"] == "http://registry:8004/mlflow/webhook"  # the name both answer to


# -- the build context ----------------------------------------------------------------------


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex (Go's filepath.Match plus `**`)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out + "$")


def in_context(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern(pattern.lstrip("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            included = negated
    return included


def context_files() -> set[str]:
    patterns, files = dockerignore(), set()
    for folder, subfolders, names in os.walk(ROOT):
        where = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if where == "." else f"{where}/"
        # Not in the context, and large: skip the walk (the rules would leave them out anyway).
        subfolders[:] = [d for d in subfolders if d not in {".git", ".venv", ".stack", "__pycache__"}]
        files |= {prefix + name for name in names if in_context(prefix + name, patterns)}
    return files


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    result: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            result.append([])
        if result:
            result[-1].append((instruction.upper(), arguments.strip()))
    return result


def copied(instructions: list[tuple[str, str]], context: set[str]) -> list[set[str]]:
    """For each RUN, the context files copied before it (COPY from the context, not --from)."""
    seen: set[str] = set()
    before_runs: list[set[str]] = []
    for instruction, arguments in instructions:
        if instruction == "COPY" and "--from=" not in arguments:
            *sources, _ = arguments.split()
            for source in sources:
                matched = {f for f in context if fnmatch.fnmatch(f, source) or f.startswith(source.rstrip("/") + "/")}
                assert matched, f"COPY {source}: nothing in the build context (.dockerignore?)"
                seen |= matched
        elif instruction == "RUN":
            before_runs.append(set(seen))
    return before_runs


def workspace_members() -> list[Path]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = [p for pattern in pyproject["tool"]["uv"]["workspace"]["members"] for p in ROOT.glob(pattern)]
    return sorted(p for p in members if (p / "pyproject.toml").exists())


def test_the_build_stage_installs_every_workspace_member_from_files_in_the_context():
    context = context_files()
    build = stages()[0]
    syncs = [args for instruction, args in build if instruction == "RUN" and "uv sync" in args]
    assert len(syncs) == 2, "one sync for the dependencies, one for the workspace"
    runs = [args for instruction, args in build if instruction == "RUN"]
    deps_files, all_files = (copied(build, context)[runs.index(sync)] for sync in syncs)
    assert {"pyproject.toml", "uv.lock"} <= deps_files
    for member in workspace_members():
        name = member.relative_to(ROOT).as_posix()
        assert f"{name}/pyproject.toml" in deps_files, f"the dependency layer lacks {name}/pyproject.toml"
        sources = {p.relative_to(ROOT).as_posix() for p in member.rglob("*.py") if "__pycache__" not in p.parts}
        assert sources, name
        assert sources <= all_files, f"not copied into the image: {sorted(sources - all_files)[:5]}"


def test_the_image_installs_runtime_dependencies_only():
    syncs = [args for instruction, args in stages()[0] if instruction == "RUN" and "uv sync" in args]
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    assert {"dev", "bench"} <= set(groups)
    for sync in syncs:
        assert "--frozen" in sync and "--no-default-groups" in sync and "--group" not in sync


def test_the_runtime_stage_has_the_datasets_the_scripts_compose_runs_and_a_non_root_user(compose):
    context = context_files()
    runtime = stages()[-1]
    files = copied([*runtime, ("RUN", "")], context)[-1]
    assert any(f.startswith("datasets/") and f.endswith("contract.yaml") for f in files)
    assert ("USER", "flywheel") in runtime and any(i == "HEALTHCHECK" for i, _ in runtime)
    scripts = {
        word.removeprefix("/app/bin/")
        for spec in compose["services"].values()
        for part in (spec.get("command"), spec.get("healthcheck", {}).get("test"))
        if isinstance(part, list)
        for word in part
        if word.startswith("/app/bin/")
    }
    assert scripts == {"bootstrap.py", "healthcheck.py"}
    assert {f"infra/docker/{script}" for script in scripts} <= files


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("libs/common/flywheel/common/service.py", True),
        ("libs/common/flywheel/common/__pycache__/service.cpython-311.pyc", False),
        ("tests/unit/test_compose.py", False),
        (".stack/kafka/libs/kafka_2.13-4.1.1.jar", False),
        ("infra/docker/bootstrap.py", True),
        ("infra/docker/images.py", False),
    ],
)
def test_dockerignore_reading_follows_dockers_rules(path, expected):
    assert in_context(path, dockerignore()) is expected


# -- Kafka's logins ---------------------------------------------------------------------------


def test_kafka_takes_only_logins_and_its_acls_are_made_before_bootstrap(compose, cluster):
    """Every listener SASL; the authorizer refuses what no ACL allows; `kafka-access` (the plan's logins and ACLs)
    runs after the brokers are healthy and before bootstrap, which logs in as the admin."""
    kafka = compose["services"]["kafka"]["environment"]
    protocols = dict(pair.split(":") for pair in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false" and kafka["KAFKA_SUPER_USERS"] == "User:admin"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    for listener in ("PLAINTEXT", "HOST"):
        assert "ScramLoginModule" in kafka[f"KAFKA_LISTENER_NAME_{listener}_SCRAM___SHA___256_SASL_JAAS_CONFIG"]
    assert "FLYWHEEL_KAFKA_ADMIN_PASSWORD" in kafka
    access = compose["services"]["kafka-access"]
    assert access["depends_on"]["kafka"]["condition"] == "service_healthy" and access["secrets"] == ["kafka-access"]
    bootstrap = compose["services"]["bootstrap"]
    assert bootstrap["depends_on"]["kafka-access"]["condition"] == "service_completed_successfully"
    assert bootstrap["environment"]["FLYWHEEL_KAFKA_USERNAME"] == "admin"
    clustered = cluster["services"]["kafka-access"]
    assert clustered["command"][0] == BROKERS
    assert all(clustered["depends_on"][n]["condition"] == "service_healthy" for n in ("kafka-2", "kafka-3"))


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_logs_in_to_kafka_as_its_own_principal(compose, service):
    environment = compose["services"][service]["environment"]
    assert environment["FLYWHEEL_KAFKA_USERNAME"] == service
    assert environment["FLYWHEEL_KAFKA_PASSWORD"].startswith(f"${{FLYWHEEL_KAFKA_{service.upper()}_PASSWORD:?")
