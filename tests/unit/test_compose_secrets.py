"""`make compose-secrets` writes every secret docker-compose.yml requires, once, and MLflow's auth file is the one
``flywheel.common.trackingaccess`` describes."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from flywheel.common.trackingaccess import ADMIN, USERS, auth_config, password_variable

ROOT = Path(__file__).resolve().parents[2]


def credentials_module():
    spec = importlib.util.spec_from_file_location("credentials", ROOT / "infra" / "docker" / "credentials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_secrets_cover_every_variable_compose_requires_and_are_kept(tmp_path: Path):
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", (ROOT / "docker-compose.yml").read_text()))
    written = credentials_module().ensure(tmp_path)
    assert required - set(written) == set()
    assert {password_variable(user) for user in [ADMIN, *USERS]} <= set(written)
    assert len({written[password_variable(user)] for user in [ADMIN, *USERS]}) == len(USERS) + 1  # all distinct
    assert credentials_module().ensure(tmp_path) == written  # a second run keeps them
    assert (tmp_path / "compose.env").stat().st_mode & 0o077 == 0


def test_the_images_mlflow_auth_file_is_the_one_trackingaccess_describes():
    shipped = (ROOT / "infra" / "docker" / "mlflow-auth.ini").read_text()
    assert shipped == auth_config("sqlite:////mlflow/auth.db")
    assert "admin_password" not in shipped  # the admin's password comes from the environment only


def test_secrets_made_before_kafka_logins_get_them_and_the_access_plan_is_owner_only(tmp_path: Path):
    from flywheel.common.kafkaaccess import ADMIN as KAFKA_ADMIN
    from flywheel.common.kafkaaccess import USERS as KAFKA_USERS

    module = credentials_module()
    first = module.ensure(tmp_path)
    env = tmp_path / "compose.env"
    env.write_text("".join(line + "\n" for line in env.read_text().splitlines() if "_KAFKA_" not in line))
    again = module.ensure(tmp_path)
    kafka = {module.kafka_password_variable(user) for user in [KAFKA_ADMIN, *KAFKA_USERS]}
    assert kafka <= set(again) and {k: v for k, v in again.items() if k not in kafka} == {
        k: v for k, v in first.items() if k not in kafka
    }
    plan = tmp_path / "kafka-access.plan"
    assert plan.stat().st_mode & 0o077 == 0
    lines = plan.read_text().splitlines()
    assert lines[0] == f"admin {again[module.kafka_password_variable(KAFKA_ADMIN)]}"
    assert {line.split()[1] for line in lines if line.startswith("user ")} == set(KAFKA_USERS)
