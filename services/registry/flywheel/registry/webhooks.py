"""MLflow's registry webhooks: a prompt way in for champion aliases moved by hand.

MLflow (3.3 on, SQL backend) posts ``model_version_alias.created`` and ``.deleted`` to the
registry, signed with HMAC-SHA256 over ``delivery_id.timestamp.payload``. A delivery that is
signed and fresh asks the same reconciliation the poller asks for (a ``reconcile`` command per model
whose alias moved, carried out by the replica owning the model): the webhook only makes it prompt.
Delivery is fire-and-forget (a few retries, then a log line), so it is never the only path: the
reconciler every ``REGISTRY_RECONCILE_S`` catches what a lost delivery missed. MLflow refuses http and
private addresses unless the server runs with ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` and
``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true``, as the launcher and compose start it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, HTTPException, Request
from mlflow import MlflowClient
from mlflow.entities.webhook import Webhook
from mlflow.exceptions import MlflowException

from flywheel.common.problems import problems
from flywheel.registry.commanded import CommandHandler
from flywheel.registry.commands import CommandDesk, reconcile
from flywheel.registry.http import answer
from flywheel.registry.metrics import WEBHOOK_DELIVERIES

log = structlog.get_logger(__name__)

WEBHOOK_NAME = "flywheel-registry"
ALIAS_EVENTS = ["model_version_alias.created", "model_version_alias.deleted"]
MAX_AGE_S = 300  # a replayed delivery older than this is refused, as MLflow's docs advise


def refusal(
    secret: str,
    delivery_id: str | None,
    timestamp: str | None,
    payload: bytes,
    signature: str | None,
    now: float | None = None,
) -> str | None:
    """Why a delivery is not to be trusted; None when it is signed with ``secret`` and fresh.

    >>> body = b'{"entity": "model_version_alias", "action": "created"}'
    >>> sign = lambda s: "v1," + base64.b64encode(
    ...     hmac.new(s.encode(), b"d1.100." + body, hashlib.sha256).digest()).decode()
    >>> refusal("s3cret", "d1", "100", body, sign("s3cret"), now=160) is None
    True
    >>> refusal("s3cret", "d1", "100", body, sign("other"), now=160)
    'the signature does not match'
    >>> refusal("s3cret", "d1", "100", body, sign("s3cret"), now=1000)
    'the delivery is 900 s old (at most 300 s)'
    >>> refusal("s3cret", None, "100", body, None, now=160)
    'unsigned: X-MLflow-Signature, X-MLflow-Delivery-Id and X-MLflow-Timestamp are required'
    """
    if not (signature and delivery_id and timestamp):
        return "unsigned: X-MLflow-Signature, X-MLflow-Delivery-Id and X-MLflow-Timestamp are required"
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return "X-MLflow-Timestamp is not a Unix time"
    if abs(age) > MAX_AGE_S:
        return f"the delivery is {age:.0f} s old (at most {MAX_AGE_S} s)"
    signed = f"{delivery_id}.{timestamp}.".encode() + payload
    expected = "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return None if hmac.compare_digest(expected, signature) else "the signature does not match"


def ensure_webhook(client: MlflowClient, url: str, secret: str, name: str = WEBHOOK_NAME) -> str:
    """Create or update the registry's webhook in MLflow (url, alias events, secret, active); its id.

    Two registry replicas starting together may both find none and both create one: each then keeps
    the oldest of that name and deletes the others, so they agree on one without a lock."""
    hooks = named_webhooks(client, name)
    if not hooks:
        description = "Flywheel's registry follows or puts back champion aliases moved by hand"
        client.create_webhook(name, url, ALIAS_EVENTS, description=description, secret=secret)
        hooks = named_webhooks(client, name)
    keep, *extra = sorted(hooks, key=lambda w: (w.creation_timestamp, w.webhook_id))
    for hook in extra:
        with contextlib.suppress(MlflowException):  # the other replica deleted it first
            client.delete_webhook(hook.webhook_id)
    return client.update_webhook(
        keep.webhook_id, url=url, events=ALIAS_EVENTS, secret=secret, status="ACTIVE"
    ).webhook_id


def named_webhooks(client: MlflowClient, name: str) -> list[Webhook]:
    return [w for w in client.list_webhooks(max_results=1000) if w.name == name]


async def register_webhook(client: MlflowClient, url: str, secret: str) -> None:
    """At start-up: the webhook in MLflow, or a warning (the reconciler alone still follows every move)."""
    try:
        webhook_id = await asyncio.to_thread(ensure_webhook, client, url, secret)
        log.info("mlflow webhook registered", webhook_id=webhook_id, url=url, events=ALIAS_EVENTS)
    except Exception as exc:  # an MLflow without webhooks (file store, < 3.3): polling only
        log.warning("mlflow webhook not registered; aliases are followed by polling alone", error=repr(exc)[:300])


def create_webhook_router(commands: CommandHandler, desk: CommandDesk, secret: str) -> APIRouter:
    router = APIRouter(tags=["mlflow"])

    @router.post("/mlflow/webhook", responses=problems(400, 401, 503))
    async def mlflow_webhook(
        request: Request,
        x_mlflow_signature: Annotated[str | None, Header()] = None,
        x_mlflow_delivery_id: Annotated[str | None, Header()] = None,
        x_mlflow_timestamp: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """MLflow's webhook delivery: a signed alias event asks to reconcile each champion alias moved by hand
        (``reconciling``: those models)."""
        payload = await request.body()
        why = refusal(secret, x_mlflow_delivery_id, x_mlflow_timestamp, payload, x_mlflow_signature)
        if why is not None:
            WEBHOOK_DELIVERIES.labels(event="refused").inc()
            raise HTTPException(401, f"webhook delivery refused: {why}")
        try:
            body = json.loads(payload)
            event = f"{body['entity']}.{body['action']}"
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(400, f"not an MLflow webhook payload: {type(exc).__name__}") from exc
        WEBHOOK_DELIVERIES.labels(event=event).inc()
        log.info("mlflow webhook", webhook_event=event, delivery_id=x_mlflow_delivery_id, data=body.get("data"))
        moved = await answer(asyncio.to_thread(commands.moved_by_hand)) if event in ALIAS_EVENTS else []
        asked = await answer(reconcile(moved, desk, seen_by="webhook"))
        return {"event": event, "delivery_id": x_mlflow_delivery_id, "reconciling": asked}

    return router
