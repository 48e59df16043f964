"""The credentials tests present: the dev stack's (``make up`` runs in dev mode, and so do the tests)."""

from flywheel.common.auth import DEV_PRODUCER_TOKEN, DEV_TOKEN, AuthSettings, Credentials, bearer

OPERATOR = bearer(DEV_TOKEN)  # principal dev-operator: operator and producer
PRODUCER = bearer(DEV_PRODUCER_TOKEN)  # principal dev-producer: producer only
DEV_CREDENTIALS = Credentials.of(AuthSettings(dev_mode=True))  # what a router built in a unit test accepts
