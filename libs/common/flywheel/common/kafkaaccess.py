"""Who may touch which topics: a Kafka principal per service, each allowed only its own topics.

Every client logs in with SASL/SCRAM-SHA-256 (``flywheel.common.kafka.client_security``); the brokers'
authorizer refuses anything no ACL allows. The ACLs come from the topic graph, which the services' own
AsyncAPI documents declare (``docs/topicgraph.py`` writes it to ``topicroles.py``): a service may write
the topics it publishes and read the topics it subscribes to or reads directly, and use the consumer
groups ``flywheel-<service>`` and ``flywheel-<service>-...``. Outside Flywheel, ``clients`` may only write the topics
the catalogue opens to clients (``records.raw``, ``labels``, ``predictions.requests``), and the
``operators`` principal may only read the topics meant for people (``alerts``, ``records.rejected``,
``models.rejected``, ``deadletters``) with groups named ``operators-...``. The ``admin`` is the brokers'
super user: the launcher, compose's bootstrap and the tests log in as it.

The launcher (``infra/launcher/kafka.py``) and compose's ``kafka-access`` run ``infra/kafka/Access.java``
with the plan ``plan`` writes: each login, and exactly these ACLs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ADMIN = "admin"  # the brokers' super user
CLIENTS, OPERATORS = "clients", "operators"  # the topic graph's outsiders
SERVICES = ("ingestion", "features", "training", "registry", "serving", "monitoring")
USERS = (*SERVICES, CLIENTS, OPERATORS)


@dataclass(frozen=True, order=True)
class Allow:
    """One ACL: ``principal`` may ``operation`` (read or write) the ``resource`` (topic or group) ``name``,
    or every one whose name starts with it when ``pattern`` is ``prefixed``."""

    principal: str
    resource: str
    pattern: str
    name: str
    operation: str

    def line(self) -> str:
        return f"allow {self.principal} {self.resource} {self.pattern} {self.name} {self.operation}"


def groups(principal: str) -> list[tuple[str, str]]:
    """The consumer groups a principal may use, as (pattern, name): a service its own group
    (``flywheel.common.kafka.consumer_options``) and those named ``flywheel-<service>-...``, operators those
    named ``operators-...``. The prefix ends with its dash, so no service's groups are another's."""
    if principal == OPERATORS:
        return [("prefixed", f"{OPERATORS}-")]
    own = f"flywheel-{principal}"
    return [("literal", own), ("prefixed", f"{own}-")]


def acls(roles: Mapping[str, Mapping[str, tuple[str, ...]]]) -> list[Allow]:
    """Every ACL of the topic graph ``roles`` (topic -> its ``producers`` and ``readers``).

    >>> for allow in acls({"labels": {"producers": ("clients",), "readers": ("ingestion",)}})[:3]:
    ...     print(allow.line())
    allow clients topic literal labels write
    allow features group literal flywheel-features read
    allow features group prefixed flywheel-features- read
    """
    allowed = {
        Allow(principal, "topic", "literal", topic, operation)
        for topic, role in roles.items()
        for operation, principals in (("write", role["producers"]), ("read", role["readers"]))
        for principal in principals
        if principal in USERS
    }
    allowed |= {Allow(p, "group", pattern, name, "read") for p in (*SERVICES, OPERATORS) for pattern, name in groups(p)}
    return sorted(allowed)


def plan(admin_password: str, passwords: Mapping[str, str], roles: Mapping[str, Mapping[str, tuple[str, ...]]]) -> str:
    """The plan ``infra/kafka/Access.java`` carries out: the admin's login, each user's, and every ACL."""
    lines = [f"admin {admin_password}", *(f"user {user} {passwords[user]}" for user in USERS)]
    return "\n".join([*lines, *(a.line() for a in acls(roles))]) + "\n"


def matrix(roles: Mapping[str, Mapping[str, tuple[str, ...]]]) -> str:
    """The permission matrix as a Markdown table (``docs/security.md``): principal x topic, R/W."""
    principals = list(USERS)
    rows = ["| topic | " + " | ".join(principals) + " |", "| --- |" + " --- |" * len(principals)]
    for topic, role in roles.items():
        cells = [
            "".join(code for code, side in (("R", "readers"), ("W", "producers")) if p in role[side]) or "·"
            for p in principals
        ]
        rows.append(f"| `{topic}` | " + " | ".join(cells) + " |")

    def group_cell(principal: str) -> str:
        if principal == CLIENTS:  # a producer only
            return "·"
        return " ".join(f"`{name}{'*' if pattern == 'prefixed' else ''}`" for pattern, name in groups(principal))

    rows.append("| consumer groups | " + " | ".join(group_cell(p) for p in principals) + " |")
    return "\n".join(rows)
