"""Load a logged model without trusting its file: skops only, with this deployment's allow-list.

MLflow's own loader gates every format behind ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` and, for
skops, trusts the types the model's own ``MLmodel`` lists, so a crafted model can whitelist what it
likes. Here the list of types a model may contain is the deployment's
(``FLYWHEEL_MLFLOW_TRUSTED_MODULES``): a pickle is refused, and so is a skops file holding any type
outside those modules (an ``os.system`` in a ``FunctionTransformer``, say) — before it is loaded.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
import skops.io
from mlflow.models import Model

TRUSTED_MODULES = ("sklearn", "river", "flywheel.common.online", "random.Random")
"""The estimators training builds: scikit-learn's, river's and the wrapper that serves river's, and
the one standard type river's models hold (their seeded ``random.Random``). A module or an exact type."""


class UnsafeModel(ValueError):
    """A model this deployment refuses to load: not skops, or holding an untrusted type."""


def untrusted(types: Iterable[str], modules: Iterable[str]) -> list[str]:
    """The types that are in none of ``modules`` (a type, a module or one of its submodules).

    >>> untrusted(["sklearn.tree._tree.Tree", "posix.system", "sklearnx.Evil"], ["sklearn"])
    ['posix.system', 'sklearnx.Evil']
    """
    trusted = tuple(modules)
    return sorted(t for t in types if not any(t == m or t.startswith(f"{m}.") for m in trusted))


def load_file(path: Path, modules: Iterable[str] = TRUSTED_MODULES) -> Any:
    """A skops file's object, if every type it needs beyond skops's defaults is in ``modules``."""
    needed = skops.io.get_untrusted_types(file=path)
    refused = untrusted(needed, modules)
    if refused:
        raise UnsafeModel(f"{path.name} holds types outside the trusted modules {sorted(modules)}: {refused}")
    return skops.io.load(path, trusted=needed)


def load_estimator(model_uri: str, modules: Iterable[str] = TRUSTED_MODULES) -> Any:
    """The scikit-learn-flavoured estimator at ``model_uri`` (``models:/name/version``), loaded safely."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        flavour = Model.load(str(local / "MLmodel")).flavors.get("sklearn")
        if flavour is None:
            raise UnsafeModel(f"{model_uri} has no scikit-learn flavour")
        serialization = flavour.get("serialization_format")
        if serialization != "skops":
            raise UnsafeModel(f"{model_uri} is saved as {serialization}: only skops is loaded, never a pickle")
        return load_file(local / flavour["pickled_model"], modules)
