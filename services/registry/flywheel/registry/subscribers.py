"""Registry's Kafka side: one consumer decides every model's candidates, rollout ends and commands in turn.

``training.completed``, ``models.rollout`` and ``registry.commands`` are all keyed by model, so a model's
messages of the three are on one partition number of each. The range assignor (every group's first,
``flywheel.common.kafka.ASSIGNORS``) gives each replica the same partition numbers of every topic it reads,
so one replica owns a model's decisions, and its one consumer handles them one at a time. Between
rebalances, that is: while partitions move, the old owner may still finish a message the new one reads
again, and idempotence by event id keeps the effect once.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker, KafkaMessage

from flywheel.common.kafka import ExactlyOnce, InvalidMessage, publish_event, subscription, undecoded
from flywheel.registry.commanded import CommandHandler
from flywheel.registry.commands import CommandDesk
from flywheel.registry.registrar import Registrar
from flywheel.schemas import (
    MODELS_ROLLOUT,
    REGISTRY_ANSWERS,
    REGISTRY_COMMANDS,
    TRAINING_COMPLETED,
    Event,
    ModelTrained,
    RegistryAnswered,
    RegistryCommand,
    RolloutStepped,
)

DECIDED = (TRAINING_COMPLETED, MODELS_ROLLOUT, REGISTRY_COMMANDS)


async def decide(registrar: Registrar, commands: CommandHandler, event: Event) -> list[Event]:
    """The decision one message asks for, and the events it caused."""
    if isinstance(event, ModelTrained):
        # a repeat (an earlier identical run answered the request) trained nothing: it was gated when new
        return [] if event.repeat else await registrar.on_trained(event)
    if isinstance(event, RolloutStepped):
        return await registrar.on_rollout(event)
    assert isinstance(event, RegistryCommand)
    return await commands.on_command(event)


def register_subscribers(
    broker: KafkaBroker,
    registrar: Registrar,
    commands: CommandHandler,
    desk: CommandDesk,
    once: ExactlyOnce,
    group: str,
) -> None:
    topics = {topic.name: topic for topic in DECIDED}

    @broker.subscriber(
        *topics,
        **subscription(REGISTRY_COMMANDS, group),
        decoder=undecoded,
        title="registry-decisions",
    )
    async def on_decision(body: bytes, message: KafkaMessage) -> None:
        """Gate a candidate; write down a rollout that ended with the champion kept; carry out a command.

        Its effect once per event id; the events it caused are published (a command's answer last) before
        the message is committed.
        """
        topic = topics.get(getattr(message.raw_message, "topic", ""))
        if topic is None:
            raise InvalidMessage(f"the registry does not decide messages of {message.raw_message!r}")
        event = topic.parse(body)
        own_ids = isinstance(event, RegistryCommand)  # a command's events derive from it or from their run
        await once.run(
            event,
            lambda: decide(registrar, commands, event),
            lambda e: publish_event(broker, e),
            derive_ids=not own_ids,
        )

    @broker.subscriber(REGISTRY_ANSWERS.name, **subscription(REGISTRY_ANSWERS, group, auto_offset_reset="latest"))
    async def on_answer(answered: RegistryAnswered) -> None:
        """Every replica hears every answer: the one whose request waits for the command answers it."""
        desk.on_answer(answered)
