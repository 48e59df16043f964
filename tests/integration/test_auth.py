"""Only who may, on the running stack: every mutating endpoint asks for a credential with a role.

The stack runs in dev mode (``make up``): the dev operator and the dev producer are its principals.
A service started as a deployment (no dev mode) without credentials does not start at all.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from flywheel.common.auth import bearer
from tests.support.auth import PRODUCER
from tests.support.stack import ROOT, component

# service, path, body, the role it needs
MUTATING = [
    ("ingestion", "/records", {"dataset": "loans", "records": []}, "producer"),
    ("ingestion", "/datasets/loans/seal", None, "operator"),
    ("ingestion", "/datasets/loans/labels/seal", None, "operator"),
    ("training", "/train", {"dataset": "loans"}, "operator"),
    ("training", "/rebuild", {"model_name": "loans-approval", "version": "1"}, "operator"),
    ("serving", "/rollouts", {"model_name": "loans-approval", "version": "1"}, "operator"),
    ("registry", "/models/loans-approval/promote", {"version": "1"}, "operator"),
    ("registry", "/models/loans-approval/rollback", {}, "operator"),
    ("registry", "/models/loans-approval/versions/1/approve", {}, "operator"),
]


@pytest.mark.parametrize(("service", "path", "body", "role"), MUTATING, ids=[f"{s}{p}" for s, p, _, _ in MUTATING])
async def test_a_mutating_endpoint_without_a_credential_is_401_and_with_the_wrong_role_403(
    services, service, path, body, role
):
    async with httpx.AsyncClient(base_url=services[service], timeout=30) as http:
        anonymous = await http.post(path, json=body)
        unknown = await http.post(path, json=body, headers=bearer("a-token-nobody-was-given-0123"))
        assert anonymous.status_code == 401 and role in anonymous.json()["detail"], anonymous.text
        assert unknown.status_code == 401, unknown.text
        if role == "operator":  # the dev producer may send records, nothing else
            producer = await http.post(path, json=body, headers=PRODUCER)
            assert producer.status_code == 403 and "dev-producer" in producer.json()["detail"], producer.text


def test_a_service_outside_dev_mode_without_credentials_does_not_start(services):
    env = {**os.environ, **component("training").env, "FLYWHEEL_DEV_MODE": "false", "TRAINING_PORT": "1"}
    env.pop("FLYWHEEL_CREDENTIALS_FILE", None)
    env.pop("FLYWHEEL_CREDENTIALS", None)
    started = subprocess.run(
        [sys.executable, "-m", "flywheel.training"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert started.returncode != 0
    assert "no credentials configured" in started.stderr + started.stdout
