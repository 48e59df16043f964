"""The compose deployment's credentials: one random bearer token per principal, written once.

``python infra/docker/credentials.py [DIR]`` (``make compose-secrets``) writes, in ``DIR``
(``.secrets`` by default, mode 0700):

- ``credentials.json``: token → principal and roles, mounted into the services as the compose
  secret ``credentials`` (``FLYWHEEL_CREDENTIALS_FILE``);
- ``compose.env``: the tokens by principal (``FLYWHEEL_SERVING_TOKEN``, ``FLYWHEEL_OPERATOR_TOKEN``,
  ``FLYWHEEL_PRODUCER_TOKEN``), for ``docker compose --env-file`` and for the people and clients
  that need them.

An existing pair is kept (rotating is deleting them and running this again, then restarting).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# principal → roles: serving promotes and rolls back through the registry; an operator runs the loop
# by hand; a producer only sends records.
PRINCIPALS = {"serving": ["operator"], "operator": ["operator", "producer"], "producer": ["producer"]}


def ensure(directory: Path) -> dict[str, str]:
    """The tokens by principal, written to ``directory`` the first time."""
    credentials, env = directory / "credentials.json", directory / "compose.env"
    if credentials.exists() and env.exists():
        return {
            line.split("=", 1)[0].removeprefix("FLYWHEEL_").removesuffix("_TOKEN").lower(): line.split("=", 1)[1]
            for line in env.read_text().splitlines()
            if line.startswith("FLYWHEEL_") and "=" in line
        }
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    tokens = {principal: secrets.token_urlsafe(32) for principal in PRINCIPALS}
    grants = {tokens[p]: {"principal": p, "roles": roles} for p, roles in PRINCIPALS.items()}
    for path, text in (
        (credentials, json.dumps(grants, indent=2) + "\n"),
        (env, "".join(f"FLYWHEEL_{p.upper()}_TOKEN={t}\n" for p, t in tokens.items())),
    ):
        path.write_text(text)
        os.chmod(path, 0o644 if path == credentials else 0o600)  # the containers' user reads the secret
    return tokens


if __name__ == "__main__":
    where = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".secrets"
    ensure(where)
    print(f"credentials in {where}: credentials.json (the services'), compose.env (the tokens by principal)")
