# One image for the six services (and the MLflow server): pick one with SERVICE.
FROM python:3.11-slim AS base
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy PYTHONUNBUFFERED=1
WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml uv.lock ./
COPY schemas/pyproject.toml schemas/
COPY libs/common/pyproject.toml libs/common/
COPY services/ingestion/pyproject.toml services/ingestion/
COPY services/features/pyproject.toml services/features/
COPY services/training/pyproject.toml services/training/
COPY services/registry/pyproject.toml services/registry/
COPY services/serving/pyproject.toml services/serving/
COPY services/monitoring/pyproject.toml services/monitoring/
RUN uv sync --frozen --no-dev --no-install-workspace

COPY schemas schemas
COPY libs libs
COPY services services
COPY datasets datasets
RUN uv sync --frozen --no-dev

ENV PATH="/app/.venv/bin:$PATH" SERVICE=ingestion
RUN useradd --create-home flywheel
USER flywheel
CMD ["sh", "-c", "exec python -m flywheel.${SERVICE}"]
