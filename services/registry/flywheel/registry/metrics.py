"""Registry's Prometheus metrics."""

from prometheus_client import Counter

DECISIONS = Counter("flywheel_registry_decisions_total", "Gate decisions by outcome.", ["model_name", "status"])
CHAMPION_MOVES = Counter("flywheel_registry_champion_moves_total", "Champion alias moves.", ["model_name", "action"])
WEBHOOK_DELIVERIES = Counter(
    "flywheel_registry_webhook_deliveries_total",
    "MLflow webhook deliveries by event (refused: bad signature).",
    ["event"],
)
