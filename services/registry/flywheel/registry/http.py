"""Registry's HTTP routes: models, versions, lineage; promote, roll back and approve (operators only).

A promote, rollback or approve is a ``registry.commands`` message that the replica owning the model carries
out; the route waits for its answer, then reads the model as it now is.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar
from uuid import UUID

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Body, Depends, HTTPException
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field, ValidationError

from flywheel.common.auth import Credentials, Principal
from flywheel.common.problems import problems
from flywheel.registry.commands import CommandDesk, Unanswered
from flywheel.registry.modelstore import REFUSED, NotFound
from flywheel.registry.registrar import Conflict, Registrar
from flywheel.schemas import RegistryCommand

T = TypeVar("T")
VERSION = re.compile(r"[0-9]{1,9}")  # MLflow numbers versions; a longer number overflows its store
READS = problems(404, 503)
WRITES = problems(401, 403, 404, 409, 503)


# The reason ends up in MLflow tags (5,000 characters at most, with the history around them). Who asked
# is the authenticated principal, never a field of the body.
class PromoteBody(BaseModel):
    version: str = Field(min_length=1, max_length=20)
    reason: str = Field(default="", max_length=1000)
    causation_id: UUID | None = Field(
        default=None, description="The event that asked for the promotion (a rollout's promoted step)."
    )


class RollbackBody(BaseModel):
    reason: str = Field(default="", max_length=1000)


class ApproveBody(BaseModel):
    reason: str = Field(default="", max_length=1000)


async def answer(call: Awaitable[T]) -> T:
    """Map domain errors to 404/409 and a failing backend to 503: never a 500."""
    try:
        return await call
    except NotFound as exc:
        raise HTTPException(404, str(exc)[:500]) from exc
    except Conflict as exc:
        raise HTTPException(409, str(exc)[:500]) from exc
    except MlflowException as exc:
        if exc.error_code in REFUSED:  # a name or version MLflow refuses cannot exist
            raise HTTPException(404, f"no such model or version: {exc.message[:300]}") from exc
        raise HTTPException(503, f"the MLflow registry failed: {exc.message[:300]}") from exc
    except (OSError, KafkaError, Unanswered) as exc:
        raise HTTPException(503, f"a backend is unreachable: {exc}"[:300]) from exc


async def decided(desk: CommandDesk, registrar: Registrar, command: RegistryCommand) -> dict[str, Any]:
    """Carry out ``command`` through its model's owner; the model as it is then (the version, if approved)."""
    answered = await answer(desk.ask(command))
    if answered.status != 200:
        raise HTTPException(answered.status, answered.detail)
    if command.action == "approve" and command.version is not None:
        return await answer(registrar.read(registrar.describe_version_sync, command.model_name, command.version))
    return await answer(registrar.read(registrar.describe_sync, command.model_name))


def command(name: str, action: Any, by: Principal, reason: str, **fields: Any) -> RegistryCommand:
    """A command of the authenticated principal (never a body's "actor"); a name too long is no model (404)."""
    try:
        return RegistryCommand(
            producer="registry", model_name=name, action=action, actor=by.name, reason=reason, **fields
        )
    except ValidationError as exc:
        raise HTTPException(404, f"no such model: {name[:80]!r}") from exc


def numbered(name: str, version: str) -> str:
    """The version, if it is one MLflow could have: anything else is a 404 without asking it."""
    if not VERSION.fullmatch(version):
        raise HTTPException(404, f"model {name[:80]!r} has no version {version[:80]!r} (versions are numbers)")
    return version


def create_router(registrar: Registrar, desk: CommandDesk, credentials: Credentials) -> APIRouter:
    router = APIRouter(tags=["models"])
    operator = Depends(credentials.require("operator"))  # the principal, for the history: never a body field

    @router.get("/models", responses=problems(503))
    async def list_models() -> dict[str, Any]:
        """Every registered model's name."""
        names = await answer(registrar.read(registrar.store.names))
        return {"models": [{"name": n} for n in names]}

    @router.get("/models/{name}", responses=READS)
    async def get_model(name: str) -> dict[str, Any]:
        """A model's versions (with status and gate results), aliases and champion history."""
        return await answer(registrar.read(registrar.describe_sync, name))

    @router.get("/models/{name}/versions/{version}", responses=READS)
    async def get_version(name: str, version: str) -> dict[str, Any]:
        """One version: status, aliases, metrics, gate results, tags."""
        return await answer(registrar.read(registrar.describe_version_sync, name, numbered(name, version)))

    @router.get("/models/{name}/versions/{version}/lineage", responses=READS)
    async def get_lineage(name: str, version: str) -> dict[str, Any]:
        """What the version was made from (data, code, params) and the events that led to it."""
        return await answer(registrar.read(registrar.lineage_sync, name, numbered(name, version)))

    @router.post("/models/{name}/promote", responses=WRITES)
    async def promote(name: str, body: Annotated[PromoteBody, Body()], by: Principal = operator) -> dict[str, Any]:
        """Make a version champion; the old champion is kept as ``previous``. The history names the caller."""
        version = numbered(name, body.version)
        asked = command(name, "promote", by, body.reason, version=version, causation_id=body.causation_id)
        return await decided(desk, registrar, asked)

    @router.post("/models/{name}/rollback", responses=WRITES)
    async def rollback(name: str, body: Annotated[RollbackBody, Body()], by: Principal = operator) -> dict[str, Any]:
        """Put the previous champion back. The history names the caller."""
        return await decided(desk, registrar, command(name, "rollback", by, body.reason))

    @router.post("/models/{name}/versions/{version}/approve", responses=WRITES)
    async def approve(
        name: str, version: str, body: Annotated[ApproveBody | None, Body()] = None, by: Principal = operator
    ) -> dict[str, Any]:
        """Release a candidate held for manual approval (challenger, or champion if first). The history names
        the caller."""
        body = body or ApproveBody()
        return await decided(
            desk, registrar, command(name, "approve", by, body.reason, version=numbered(name, version))
        )

    return router
