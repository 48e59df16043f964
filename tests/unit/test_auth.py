"""Credentials: who may change data or move a model (``flywheel.common.auth``)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI

from flywheel.common.auth import DEV_TOKEN, AuthSettings, Credentials, Grant, InsecureCredentials, Principal, bearer

MUTATING = ("ingestion", "training", "registry", "serving")  # the services with endpoints that change things
TOKENS = {
    "a-long-operator-token-0123456789": {"principal": "ops-alice", "roles": ["operator"]},
    "a-long-producer-token-0123456789": {"principal": "feeder", "roles": ["producer"]},
    "a-long-analyst-token-0123456789": {"principal": "analyst", "roles": ["reader"], "datasets": ["loans"]},
}


def app_with(credentials: Credentials) -> FastAPI:
    app = FastAPI()

    @app.post("/records")
    async def records(by: Principal = Depends(credentials.require("producer"))) -> dict:  # noqa: B008
        return {"by": by.name}

    @app.post("/train")
    async def train(by: Principal = Depends(credentials.require("operator"))) -> dict:  # noqa: B008
        return {"by": by.name}

    @app.get("/datasets/{dataset}/data")
    async def data(dataset: str, by: Principal = Depends(credentials.reader())) -> dict:  # noqa: B008
        return {"by": by.name, "dataset": dataset}

    return app


async def test_no_credential_is_401_a_wrong_role_403_and_the_principal_is_the_tokens() -> None:
    grants = {token: Grant.model_validate(grant) for token, grant in TOKENS.items()}
    app = app_with(Credentials(grants))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        none = await http.post("/train")
        malformed = await http.post("/train", headers={"Authorization": "Basic abc"})
        unknown = await http.post("/train", headers=bearer("not-a-token-of-ours-at-all"))
        wrong_role = await http.post("/train", headers=bearer("a-long-producer-token-0123456789"))
        fed = await http.post("/records", headers=bearer("a-long-producer-token-0123456789"))
        operated = await http.post("/train", headers=bearer("a-long-operator-token-0123456789"))
        not_a_producer = await http.post("/records", headers=bearer("a-long-operator-token-0123456789"))
    assert [r.status_code for r in (none, malformed, unknown)] == [401, 401, 401]
    assert none.headers["WWW-Authenticate"] == "Bearer" and "operator role" in none.json()["detail"]
    assert wrong_role.status_code == 403 and "feeder does not hold the operator role" in wrong_role.json()["detail"]
    assert fed.json() == {"by": "feeder"} and operated.json() == {"by": "ops-alice"}
    assert not_a_producer.status_code == 403


async def test_a_reader_reads_only_the_datasets_its_grant_names_and_an_operator_every_one() -> None:
    grants = {token: Grant.model_validate(grant) for token, grant in TOKENS.items()}
    app = app_with(Credentials(grants))
    analyst, operator = bearer("a-long-analyst-token-0123456789"), bearer("a-long-operator-token-0123456789")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        none = await http.get("/datasets/loans/data")
        its_own = await http.get("/datasets/loans/data", headers=analyst)
        another = await http.get("/datasets/rain/data", headers=analyst)
        feeder = await http.get("/datasets/loans/data", headers=bearer("a-long-producer-token-0123456789"))
        operated = await http.get("/datasets/rain/data", headers=operator)
        wrote = await http.post("/train", headers=analyst)
    assert none.status_code == 401 and "read access to loans" in none.json()["detail"]
    assert its_own.json() == {"by": "analyst", "dataset": "loans"} and operated.json()["by"] == "ops-alice"
    assert another.status_code == 403 and "analyst may not read the dataset rain" in another.json()["detail"]
    assert feeder.status_code == 403 and wrote.status_code == 403


def test_outside_dev_mode_the_dev_credentials_or_none_refuse_to_start_and_a_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(InsecureCredentials, match="no credentials configured"):
        AuthSettings(dev_mode=False).grants()
    dev = json.dumps({DEV_TOKEN: {"principal": "x", "roles": ["operator"]}})
    with pytest.raises(InsecureCredentials, match="well-known dev credentials"):
        AuthSettings(dev_mode=False, credentials=dev).grants()
    short = json.dumps({"short": {"principal": "x", "roles": ["operator"]}})
    with pytest.raises(InsecureCredentials, match="shorter than 16"):
        AuthSettings(dev_mode=False, credentials=short).grants()
    secret = "a-secret-that-must-not-be-echoed"
    with pytest.raises(InsecureCredentials) as refused:
        AuthSettings(dev_mode=False, credentials="{" + secret).grants()
    assert secret not in str(refused.value)
    file = tmp_path / "credentials.json"
    file.write_text(json.dumps(TOKENS))
    grants = AuthSettings(dev_mode=False, credentials_file=file).grants()
    assert {g.principal for g in grants.values()} == {"ops-alice", "feeder", "analyst"}
    assert DEV_TOKEN in AuthSettings(dev_mode=True).grants()


@pytest.mark.parametrize("service", MUTATING)
def test_a_service_with_mutating_endpoints_refuses_to_start_outside_dev_mode_without_credentials(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLYWHEEL_DEV_MODE", "false")
    module = importlib.import_module(f"flywheel.{service}.app")
    with pytest.raises(InsecureCredentials, match="no credentials configured"):
        module.create_app()
    monkeypatch.setenv("FLYWHEEL_CREDENTIALS", json.dumps({DEV_TOKEN: {"principal": "x", "roles": ["operator"]}}))
    with pytest.raises(InsecureCredentials, match="well-known dev credentials"):
        module.create_app()


def test_serving_refuses_to_present_the_dev_token_to_the_registry_outside_dev_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_DEV_MODE", "false")
    monkeypatch.setenv("FLYWHEEL_CREDENTIALS", json.dumps(TOKENS))
    from flywheel.serving.app import create_app

    with pytest.raises(InsecureCredentials, match="SERVING_REGISTRY_TOKEN is a well-known dev credential"):
        create_app()
