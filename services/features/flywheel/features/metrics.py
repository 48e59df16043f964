"""Features' domain metrics."""

from prometheus_client import Counter, Gauge

UPDATES = Counter(
    "flywheel_features_updates_total", "Validated records folded into the online store.", ["dataset", "outcome"]
)
ENTITIES = Gauge("flywheel_features_entities", "Entities with a vector in the online store.", ["dataset"])
