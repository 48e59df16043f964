"""Training's Prometheus metrics."""

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter("flywheel_training_runs_total", "Training runs by outcome.", ["model_name", "outcome"])
MERGED = Counter("flywheel_training_requests_merged_total", "Requests merged into another run.", ["model_name"])
DURATION = Histogram(
    "flywheel_training_duration_seconds",
    "Wall time of a training run.",
    ["model_name"],
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
RUNNING = Gauge("flywheel_training_runs_in_progress", "Training runs in progress.")
