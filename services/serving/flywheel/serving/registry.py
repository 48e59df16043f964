"""The registry's HTTP API, as serving uses it: only the registry moves the champion alias."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx


class RegistryClient:
    def __init__(self, base_url: str, token: str) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})

    async def promote(self, model_name: str, version: str, reason: str, cause: UUID | None = None) -> None:
        """Ask the registry to make ``version`` the champion, as caused by ``cause`` (the rollout's promoted step);
        raise with its answer when it refuses."""
        body = {"version": version, "reason": reason, "actor": "serving"}
        body |= {"causation_id": str(cause)} if cause else {}
        response = await self._client.post(f"/models/{model_name}/promote", json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"registry refused promotion ({response.status_code}): {response.text[:300]}")

    async def rollback(self, model_name: str, reason: str) -> None:
        """Ask the registry to put the previous champion back; raise with its answer when it refuses."""
        response = await self._client.post(
            f"/models/{model_name}/rollback", json={"reason": reason, "actor": "serving"}
        )
        if response.status_code >= 300:
            raise RuntimeError(f"registry refused rollback ({response.status_code}): {response.text[:300]}")

    async def version(self, model_name: str, version: str) -> dict[str, Any] | None:
        """The registry's description of a version (its ``status``, whether it ``may_serve``); None if it has none."""
        response = await self._client.get(f"/models/{model_name}/versions/{version}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    async def close(self) -> None:
        await self._client.aclose()
