"""The one shape of every error answer, and its declaration in each route's OpenAPI.

Every 4xx (and a 503 from a backend that is down) answers ``{"detail": "...", "errors": [...]}``:
a sentence for people, and per field what is wrong for programs. A route declares the codes it
raises with ``responses=problems(404, 409)``; ``declare_input_problems`` adds the 400 and 422
that any route with parameters or a body can give, so the schema a client (or schemathesis)
checks answers against is the one the service keeps.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

REF = "#/components/schemas/"

WHY = {
    400: "The body is not a JSON document this service can read (e.g. nested too deeply).",
    401: "No bearer token, or not of the form 'Bearer <token>'.",
    403: "The bearer token is not valid here.",
    404: "Nothing of that name (dataset, model, version, entity, run).",
    409: "The request conflicts with the current state.",
    413: "Too many records, or a record too large, in one request.",
    422: "A field is missing, of the wrong type, or out of range: ``errors`` names each one.",
    503: "A backend (Kafka, MinIO, MLflow) is unavailable, or the service is still starting.",
}


class FieldProblem(BaseModel):
    """What is wrong with one field of the request."""

    field: str
    message: str
    rule: str | None = None


class Problem(BaseModel):
    """An error answer: what went wrong and, for invalid input, each field at fault."""

    detail: str
    errors: list[FieldProblem] = []


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error codes a route answers, all in the ``Problem`` shape."""
    return {code: {"model": Problem, "description": WHY[code]} for code in codes}


def declare_input_problems(app: FastAPI) -> None:
    """Make the app's OpenAPI say what invalid input gets: a ``Problem`` for every 422 (in place of
    FastAPI's ``HTTPValidationError``, which is not what the validation handler answers), and a 400
    for a body that is not JSON this service can read (say, nested too deeply to parse)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = generate()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        found = Problem.model_json_schema(ref_template=f"{REF}{{model}}")
        schemas.update(found.pop("$defs", {}))
        schemas.setdefault("Problem", found)
        answer = {"content": {"application/json": {"schema": {"$ref": f"{REF}Problem"}}}}
        for operation in (op for path in spec.get("paths", {}).values() for op in path.values()):
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                responses["422"] = {"description": WHY[422], **answer}
            if "requestBody" in operation:
                responses.setdefault("400", {"description": WHY[400], **answer})
        if "HTTPValidationError" not in str(spec.get("paths")):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
