"""Who may change data or move a model: bearer credentials, each naming a principal and its roles.

Every mutating endpoint asks for a role with ``Credentials.require(role)``:

- **producer**: publishes data (``POST /records``);
- **operator**: runs the loop by hand (train, rebuild, seal, roll out, promote, roll back, approve);
- **reader**: downloads datasets' data (a version's Parquet, its presigned URL), each credential
  for every dataset or only those its grant names. An operator may read every dataset.

The endpoint gets the authenticated ``Principal``; what it writes down (an audit entry, an event's
actor) names that principal, never a field of the request body. No credential: 401; a credential
without the role: 403.

Credentials come from a JSON file (a Docker or Kubernetes secret) or an environment variable:
``{"<token>": {"principal": "ops-alice", "roles": ["operator"]},
"<token>": {"principal": "analyst-bob", "roles": ["reader"], "datasets": ["loans"]}, ...}``. The well-known dev
credentials below are accepted only in an explicit dev mode (``FLYWHEEL_DEV_MODE=true``, which
``make up`` and ``make demo`` set); anywhere else a service refuses to start with them, or with none.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Header, HTTPException
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["producer", "operator", "reader"]
DEV_TOKEN = "flywheel-dev-token"
DEV_PRODUCER_TOKEN = "flywheel-dev-producer"
DEV_SERVING_TOKEN = "flywheel-dev-serving"  # serving's own, for its promotions and rollbacks: the platform acting


class Grant(BaseModel):
    """What one credential is: the principal it authenticates and the roles it holds."""

    principal: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    roles: frozenset[Role] = Field(min_length=1)
    datasets: frozenset[str] | None = Field(
        default=None, description="The datasets a reader may download; absent: every dataset."
    )


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as, with what its credential grants."""

    grant: Grant

    @property
    def name(self) -> str:
        return self.grant.principal

    @property
    def roles(self) -> frozenset[Role]:
        return self.grant.roles

    def may_read(self, dataset: str) -> bool:
        """Whether this principal may download ``dataset``'s data.

        >>> analyst = Principal(Grant(principal="bob", roles={"reader"}, datasets={"loans"}))
        >>> operator = Principal(Grant(principal="ops", roles={"operator"}))
        >>> analyst.may_read("loans"), analyst.may_read("rain"), operator.may_read("rain")
        (True, False, True)
        """
        if "operator" in self.roles:
            return True
        return "reader" in self.roles and (self.grant.datasets is None or dataset in self.grant.datasets)


DEV_GRANTS = {
    DEV_TOKEN: Grant(principal="dev-operator", roles=frozenset({"producer", "operator", "reader"})),
    DEV_PRODUCER_TOKEN: Grant(principal="dev-producer", roles=frozenset({"producer"})),
    DEV_SERVING_TOKEN: Grant(principal="serving", roles=frozenset({"operator"})),
}


class InsecureCredentials(RuntimeError):
    """The service would accept well-known credentials, or none, outside dev mode: it does not start."""


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    dev_mode: bool = Field(
        default=False,
        description="Accept the well-known dev credentials (make up, make demo). Never in a deployment.",
    )
    credentials_file: Path | None = Field(
        default=None, description='JSON file of credentials: {"<token>": {"principal": ..., "roles": [...]}}.'
    )
    credentials: SecretStr | None = Field(default=None, description="The same JSON, inline (prefer the file).")

    def grants(self) -> dict[str, Grant]:
        """The credentials this service accepts; raises ``InsecureCredentials`` when it must not start.

        >>> sorted(AuthSettings(dev_mode=True).grants())
        ['flywheel-dev-producer', 'flywheel-dev-serving', 'flywheel-dev-token']
        >>> AuthSettings(dev_mode=False).grants()  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ...
        flywheel.common.auth.InsecureCredentials: no credentials configured
        """
        configured = self._configured()
        if self.dev_mode:
            return {**DEV_GRANTS, **configured}
        if set(configured) & set(DEV_GRANTS):
            raise InsecureCredentials(
                "the well-known dev credentials are configured outside dev mode: give every principal its own secret"
            )
        if not configured:
            raise InsecureCredentials(
                "no credentials configured: set FLYWHEEL_CREDENTIALS_FILE"
                " (or FLYWHEEL_DEV_MODE=true on a development stack)"
            )
        return configured

    def _configured(self) -> dict[str, Grant]:
        text = ""
        if self.credentials_file is not None:
            text = self.credentials_file.read_text()
        elif self.credentials is not None:
            text = self.credentials.get_secret_value()
        if not text.strip():
            return {}
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("not an object of token → grant")
            grants = {str(token): Grant.model_validate(grant) for token, grant in raw.items()}
        except (ValueError, TypeError, ValidationError) as exc:  # never echo the file: it holds the secrets
            raise InsecureCredentials(
                f"the credentials are not valid JSON of token → grant: {type(exc).__name__}"
            ) from None
        if short := [g.principal for token, g in grants.items() if len(token) < 16]:
            raise InsecureCredentials(
                f"credentials shorter than 16 characters (principals {short}): use long random tokens"
            )
        return grants


class Credentials:
    """The credentials a service accepts, and the FastAPI dependencies that ask for a role."""

    def __init__(self, grants: dict[str, Grant]) -> None:
        self._grants = list(grants.items())

    @classmethod
    def of(cls, settings: AuthSettings) -> Credentials:
        return cls(settings.grants())

    def authenticate(self, token: str) -> Principal | None:
        """The principal a token names; every configured token is compared, in constant time."""
        found = None
        for known, grant in self._grants:
            if secrets.compare_digest(token.encode(), known.encode()):
                found = Principal(grant)
        return found

    def require(self, role: Role) -> Callable[..., Awaitable[Principal]]:
        """A dependency: the authenticated principal, if it holds ``role`` (else 401 or 403)."""

        async def check(authorization: Annotated[str | None, Header()] = None) -> Principal:
            principal = self._authenticated(authorization, f"the {role} role")
            if role not in principal.roles:
                raise HTTPException(403, f"{principal.name} does not hold the {role} role")
            return principal

        return check

    def reader(self) -> Callable[..., Awaitable[Principal]]:
        """A dependency for a path with a ``{dataset}``: the principal, if it may read that dataset."""

        async def check(dataset: str, authorization: Annotated[str | None, Header()] = None) -> Principal:
            principal = self._authenticated(authorization, f"read access to {dataset}")
            if not principal.may_read(dataset):
                raise HTTPException(403, f"{principal.name} may not read the dataset {dataset}")
            return principal

        return check

    def caller(self, authorization: str | None) -> Principal | None:
        """The principal an optional Authorization header names, if any (no error either way)."""
        token = _bearer_token(authorization)
        return self.authenticate(token) if token else None

    def _authenticated(self, authorization: str | None, needs: str) -> Principal:
        """The principal a request's Authorization header names, or a 401 saying what was needed."""
        if not authorization:
            raise HTTPException(
                401, f"this needs {needs}: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
            )
        token = _bearer_token(authorization)
        if token is None:
            raise HTTPException(401, "Authorization must be 'Bearer <token>'", {"WWW-Authenticate": "Bearer"})
        principal = self.authenticate(token)
        if principal is None:
            raise HTTPException(401, "the bearer token is not one this service knows", {"WWW-Authenticate": "Bearer"})
        return principal


def _bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when it is absent or not one.

    >>> _bearer_token("Bearer abc "), _bearer_token("Basic abc"), _bearer_token(None)
    ('abc', None, None)
    """
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def client_token(settings: AuthSettings, token: str, what: str) -> str:
    """A token this service presents to another (``what``); a well-known dev one only in dev mode.

    >>> client_token(AuthSettings(dev_mode=False), DEV_TOKEN, "A_TOKEN")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    flywheel.common.auth.InsecureCredentials: A_TOKEN is a well-known dev credential
    """
    if token in DEV_GRANTS and not settings.dev_mode:
        raise InsecureCredentials(f"{what} is a well-known dev credential, and this is not a dev stack")
    return token


def bearer(token: str) -> dict[str, str]:
    """The header that presents ``token``."""
    return {"Authorization": f"Bearer {token}"}
