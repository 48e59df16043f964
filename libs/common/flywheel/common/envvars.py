"""The environment variables a settings class reads: for the compose test and the config docs."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings


def env_vars(settings_cls: type[BaseSettings]) -> dict[str, object]:
    """Every variable name the class reads (nested shared settings included) with its default.

    >>> from flywheel.common.settings import KafkaSettings
    >>> sorted(env_vars(KafkaSettings))[:1]
    ['FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS']
    """
    prefix = settings_cls.model_config.get("env_prefix", "")
    found: dict[str, object] = {}
    for name, field in settings_cls.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            found.update(env_vars(kind))
        else:
            default = field.get_default(call_default_factory=True)
            # A secret's default is shown as pydantic masks it: empty stays empty, anything else is starred.
            found[f"{prefix}{name}".upper()] = str(default) if isinstance(default, SecretStr) else default
    return found
