"""The CLI's HTTP edge: call a service, turn every expected failure into one readable line."""

from __future__ import annotations

from typing import Any

import httpx


class CliError(Exception):
    """An expected failure: printed as one line, exit code 1, no traceback."""


class NotFound(CliError):
    """The service answered 404: the thing, or the endpoint, is not there."""


def reason_of(response: httpx.Response) -> str:
    """The service's own explanation of a 4xx/5xx, kept to one line."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0][:300] if response.text.strip() else response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail)
    return str(detail).replace("\n", " ")[:300]


def call(
    service: str,
    method: str,
    url: str,
    *,
    body: Any = None,
    token: str = "",
    timeout: float = 10.0,
) -> Any:
    """One HTTP call to a Flywheel service; its JSON answer, or ``CliError`` with why not."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url, json=body, headers=headers, timeout=timeout)
    except httpx.ConnectError as exc:
        raise CliError(f"cannot reach {service} at {url}: {exc or 'connection refused'}") from exc
    except httpx.TimeoutException as exc:
        raise CliError(f"{service} did not answer {method} {url} within {timeout:g}s") from exc
    except httpx.HTTPError as exc:
        raise CliError(f"{service}: {method} {url} failed: {exc}") from exc
    if response.status_code == 404:
        raise NotFound(f"{service} answered 404 to {method} {url}: {reason_of(response)}")
    if response.status_code >= 400:
        raise CliError(f"{service} refused {method} {url} ({response.status_code}): {reason_of(response)}")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text
