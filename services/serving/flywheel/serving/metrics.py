"""Serving's domain metrics."""

from prometheus_client import Counter, Gauge, Histogram

PREDICTIONS_SERVED = Counter(
    "flywheel_serving_predictions_total",
    "Predictions made, by variant (champion, candidate, and shadow answers never returned).",
    ["model", "variant"],
)
PREDICT_LATENCY = Histogram(
    "flywheel_serving_predict_seconds",
    "Time of one scoring call (features + model): a request, or concurrent requests scored together.",
    ["model"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
ROLLOUT_TRAFFIC = Gauge("flywheel_serving_rollout_candidate_traffic", "Candidate's share of traffic.", ["model"])
LOG_DROPPED = Counter(
    "flywheel_serving_prediction_log_dropped_total",
    "Predictions not logged: queue full past the wait, or publish failed.",
)
LOG_QUEUED = Gauge("flywheel_serving_prediction_log_queued", "Predictions waiting to be published to the log.")
BAKE_ROLLBACKS = Counter(
    "flywheel_serving_bake_rollbacks_total", "Champions rolled back by the guard in their bake period.", ["model"]
)
