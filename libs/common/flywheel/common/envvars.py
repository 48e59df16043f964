"""The environment variables a settings class reads: for the compose test and the config docs."""

from __future__ import annotations

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
            found[f"{prefix}{name}".upper()] = field.get_default(call_default_factory=True)
    return found
