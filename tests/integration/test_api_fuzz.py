"""schemathesis over every service's OpenAPI, against the running stack: no input gets a 5xx.

Each operation gets its schema's examples, the coverage phase's boundary and negative values, and a
bounded number of random cases (positive and negative). Every answer must be a declared status
whose body conforms to the declared schema, and no answer may be a server error.

The services are shared with the other tests, so nothing valid-but-destructive reaches a real
model or dataset: ``harmless`` points promote, rollback, approve and rollouts at models that do
not exist, never seals a real dataset, makes every training request carry an invalid parameter (so
none is published) and every record posted to ingestion carry an unknown column (so none is
accepted). Reads and predictions do reach the real dataset and the demo's model, to exercise
their validation.

Reproduce one run with ``FLYWHEEL_FUZZ_SEED=<seed> pytest tests/integration/test_api_fuzz.py``;
``FLYWHEEL_FUZZ_EXAMPLES`` sets the random cases per operation, ``FLYWHEEL_FUZZ_MODEL`` the model
the predict cases reach.
"""

from __future__ import annotations

import os
import random
import re
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from docs.generate import service_documents
from flywheel.common.auth import DEV_TOKEN
from flywheel.common.modelspec import load_model_spec
from flywheel.common.problems import Problem
from tests.integration.conftest import service_url

SEED = int(os.environ.get("FLYWHEEL_FUZZ_SEED", random.randrange(2**32)))
EXAMPLES = int(os.environ.get("FLYWHEEL_FUZZ_EXAMPLES", "25"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
TOKEN = DEV_TOKEN
NEEDS_A_ROLE = {  # the mutating routes: a token (dev-operator's) on two cases in three, none on the third
    "POST /records",
    "POST /train",
    "POST /rebuild",
    "POST /datasets/{dataset}/seal",
    "POST /datasets/{dataset}/labels/seal",
    "POST /rollouts",
    "POST /models/{name}/promote",
    "POST /models/{name}/rollback",
    "POST /models/{name}/versions/{version}/approve",
}
ROOT = Path(__file__).resolve().parents[2]
DATASET = "loans"
# the model the predict cases reach: the demo's (served once the closed loop or the e2e tests trained it)
SERVED = os.environ.get("FLYWHEEL_FUZZ_MODEL") or load_model_spec(ROOT / "datasets", DATASET).model_name
ABSENT = "fuzz-absent"
# A 503 these services give whatever the input, until a champion exists or the online store is rebuilt
NOT_READY = re.compile(r"has no champion yet|online store is rebuilding")


def config(base_url: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "request-timeout": 30,
            "suppress-health-check": ["all"],
            "generation": {"max-examples": EXAMPLES, "mode": "all", "database": "none"},
            "phases": {"stateful": {"enabled": False}},
        }
    )


def pick(value: Any, *choices: str) -> str:
    """One of ``choices``, chosen by the generated value: deterministic for a seed, varied across cases."""
    return choices[zlib.crc32(repr(value).encode()) % len(choices)]


def harmless(case: schemathesis.Case) -> None:
    """Rewrite a case so that, valid or not, it cannot change state other tests rely on."""
    route = f"{case.method.upper()} {case.path}"
    body = case.body if isinstance(case.body, dict) else None
    params = case.path_parameters if case.path_parameters is not None else {}
    if isinstance(params.get("dataset"), str) and route != "POST /datasets/{dataset}/seal":
        params["dataset"] = pick(params["dataset"], DATASET, params["dataset"])
    if route in NEEDS_A_ROLE and pick(case.body, "token", "token", "as generated") == "token":
        case.headers = {**(case.headers or {}), "authorization": f"Bearer {TOKEN}"}
    if route in ("POST /datasets/{dataset}/seal", "POST /datasets/{dataset}/labels/seal"):
        params["dataset"] = ABSENT
    elif route.startswith("POST /models/{name}/") and case.path.endswith(("promote", "rollback", "approve")):
        params["name"] = f"{ABSENT}-{pick(params.get('name'), *'abcdef')}"
    elif route == "POST /models/{name}/predict" and isinstance(params.get("name"), str):
        params["name"] = pick(params["name"], SERVED, params["name"])  # its champion, when it has one
    elif route == "POST /rollouts" and body is not None:
        body["model_name"] = f"{ABSENT}-{pick(body.get('model_name'), *'abcdef')}"
    elif route == "POST /train" and body is not None:
        if isinstance(body.get("dataset"), str):
            body["dataset"] = pick(body["dataset"], DATASET, body["dataset"])
        if isinstance(body.get("params", {}), dict):
            body["params"] = {**body.get("params", {}), "test_size": 2}  # invalid: 422, nothing published
    elif route == "POST /records" and body is not None:
        if isinstance(body.get("dataset"), str):
            body["dataset"] = pick(body["dataset"], DATASET, body["dataset"])
        if isinstance(body.get("records"), list):
            body["records"] = [{**r, "fuzz": True} if isinstance(r, dict) else r for r in body["records"]]
    elif route == "POST /predict" and body is not None and isinstance(body.get("dataset"), str):
        body["dataset"] = pick(body["dataset"], DATASET, body["dataset"])


# The documents come from the code (building an app connects to nothing), so collecting this module
# needs no stack; a test holds the running services to the very same documents.
OPENAPI = {name: documents["openapi"] for name, documents in service_documents().items()}


def test_the_running_services_serve_the_openapi_of_this_code(services: dict[str, str]) -> None:
    for name, base in services.items():
        assert httpx.get(f"{base}/openapi.json", timeout=10).json() == OPENAPI[name], f"{name} runs other code"


BIG = "1" * 401
RECORD = (
    '{"applicant_id": "fuzz", "applied_at": "2026-01-01T00:00:00Z", "salary": %s, "commission": 0, "age": 40,'
    ' "elevel": 1, "car": 1, "zipcode": 1, "hvalue": 1, "hyears": 1, "loan": 1}'
)
ABSURD = [
    ("ingestion", "POST", "/records", '{"dataset": "loans", "records": [%s]}' % (RECORD % BIG), 200),
    ("ingestion", "POST", "/records", '{"dataset": "loans", "records": [%s]}' % (RECORD % "Infinity"), 200),
    ("ingestion", "POST", "/records", '{"dataset": "loans", "records": [' + "[" * 50_000 + "]" * 50_000 + "]}", 400),
    ("ingestion", "GET", "/datasets/loans/versions/" + "f" * 65, None, 404),
    ("serving", "POST", "/predict", '{"dataset": "loans", "records": [%s]}' % (RECORD % BIG), {422, 503}),
    ("serving", "POST", "/models/" + "m" * 3000 + "/predict", '{"records": [%s]}' % (RECORD % "1e308"), 404),
    ("serving", "POST", "/rollouts", f'{{"model_name": "{SERVED}", "version": "{"9" * 30}"}}', 422),
    ("features", "POST", "/features/loans/compute", '{"records": [%s]}' % (RECORD % BIG), 422),
    ("features", "GET", "/features/loans/" + "e" * 10_000, None, {404, 503}),
    ("training", "POST", "/train", '{"dataset": "%s"}' % ("d" * 5000), 422),
    ("training", "POST", "/train", '{"dataset": "../datasets/loans"}', 404),
    ("training", "POST", "/train", '{"dataset": "loans", "params": {"test_size": ' + BIG + "}}", 422),
    ("registry", "GET", "/models/%40/versions/" + "9" * 30, None, 404),
    ("registry", "GET", "/models/" + "n" * 3000, None, 404),
    ("registry", "GET", "/models/loans-approval/versions/%C2%B2/lineage", None, 404),
    ("registry", "POST", f"/models/{ABSENT}/promote", '{"version": "%s"}' % ("9" * 20), 404),
    ("monitoring", "GET", "/drift?model=" + "m" * 5000, None, 404),
    ("monitoring", "GET", "/alerts?open_only=maybe", None, 422),
]


@pytest.mark.parametrize(
    ("service", "method", "path", "body", "expected"),
    ABSURD,
    ids=[f"{s}-{m}-{p[:24]}-{(b or '')[-12:]}" for s, m, p, b, _ in ABSURD],
)
def test_an_absurd_request_gets_its_answer_with_a_reason_never_a_5xx(services, service, method, path, body, expected):
    headers = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
    response = httpx.request(method, services[service] + path, content=body, headers=headers, timeout=60)
    assert response.status_code in (expected if isinstance(expected, set) else {expected}), response.text[:500]
    if response.status_code >= 400:
        assert len(Problem.model_validate(response.json()).detail) < 1000
        assert response.status_code < 500 or NOT_READY.search(response.text)


@schemathesis.pytest.parametrize(
    **{name: schemathesis.openapi.from_dict(spec, config=config(service_url(name))) for name, spec in OPENAPI.items()}
)
def test_no_input_gets_a_server_error_and_every_answer_is_as_documented(
    case: schemathesis.Case, services: dict[str, str]
) -> None:
    harmless(case)
    response = case.call()
    checks = CHECKS
    if response.status_code == 503 and NOT_READY.search(response.text):  # the state of the stack, not the input
        checks = [check for check in CHECKS if check is not not_a_server_error]
    try:
        case.validate_response(response, checks=checks)
    except Exception as exc:
        exc.add_note(f"rerun this fuzz with FLYWHEEL_FUZZ_SEED={SEED} FLYWHEEL_FUZZ_EXAMPLES={EXAMPLES}")
        raise
