"""A champion alias moved outside the registry (MLflow's UI or client): followed, or put back.

The registry keeps the champion it decided in a model tag (``flywheel.champion``), written with
every move it makes. A reconciler compares it with MLflow's ``champion`` alias every
``REGISTRY_RECONCILE_S``: an alias moved by hand to a version that may serve (``decisions.may_serve``:
it passed its gates or an operator approved it) is followed — history, tags
and a ``models.champion`` event with actor ``mlflow``, which serving and monitoring act on; any other
move (a rejected, held or never judged version, one that does not exist, the alias deleted) is put
back, with an alert saying why.
MLflow records no author for an alias, so the audit says when the registry saw the move, and
what saw it, not who made it. MLflow's registry webhook (``flywheel.registry.webhooks``) makes it
prompt; the reconciler makes it sure: webhooks are fire-and-forget and experimental, and a
reconciler also catches what a lost delivery missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flywheel.registry.decisions import PRODUCER, may_serve
from flywheel.schemas import AlertRaised

Verdict = Literal["same", "adopt", "follow", "put_back"]
SeenBy = Literal["reconciler", "webhook"]


@dataclass(frozen=True)
class AliasCheck:
    """One model's champion as the registry recorded it and as MLflow's alias says now.

    ``status``: the found version's ``flywheel.status``; None when there is no such version.

    >>> AliasCheck("m", recorded="1", found="1", status="approved").verdict()
    'same'
    >>> AliasCheck("m", recorded="1", found="2", status="approved").verdict()
    'follow'
    >>> AliasCheck("m", recorded="1", found="3", status="rejected").verdict()
    'put_back'
    >>> AliasCheck("m", recorded="1", found=None, status=None).verdict()
    'put_back'
    >>> AliasCheck("m", recorded=None, found="4", status="approved").verdict()  # recorded before this tag
    'adopt'
    """

    model_name: str
    recorded: str | None
    found: str | None
    status: str | None

    def verdict(self) -> Verdict:
        if self.recorded is None:
            return "adopt" if self.found is not None else "same"
        if self.found == self.recorded:
            return "same"
        if self.found is not None and may_serve(self.status):
            return "follow"
        return "put_back"

    def why_not(self) -> str:
        """Why a hand-set alias is put back."""
        if self.found is None:
            return "the champion alias was deleted"
        if self.status is None:
            return f"v{self.found} does not exist"
        return f"v{self.found} is {self.status}; only a version that passed its gates or was approved can serve"

    def alert(self) -> AlertRaised:
        """What operators are told when the alias is put back."""
        return AlertRaised(
            producer=PRODUCER,
            severity="critical",
            kind="champion_alias",
            message=f"{self.model_name}: champion alias moved outside the registry and put back to "
            f"v{self.recorded}: {self.why_not()}",
            dedup_key=f"champion_alias:{self.model_name}",
            evidence={
                "model_name": self.model_name,
                "found": self.found,
                "status": self.status,
                "put_back_to": self.recorded,
            },
        )
