# One image for the six services, the MLflow server and the one-shot bootstrap: pick one with SERVICE.
#
# BASE_IMAGE is any Debian-like image with python3 (>= 3.11), python3-venv and ca-certificates:
# the official python image by default; `make compose-images` builds a stand-in without any
# registry (infra/docker/python/Dockerfile). EXTRA_CA_CERTS (PEM text) is trusted while building,
# for networks that reach PyPI through a TLS-inspecting gateway; it stays out of the final image.
# No `# syntax=` line: the file builds with the classic builder and with BuildKit alike.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
ARG EXTRA_CA_CERTS=""
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt \
        && update-ca-certificates >/dev/null; \
    fi \
    && python3 -m venv /opt/uv && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"
WORKDIR /app

# Dependencies first, so code changes do not reinstall them: every workspace member's
# pyproject.toml (tests/unit/test_compose.py checks that none is missing).
COPY pyproject.toml uv.lock ./
COPY schemas/pyproject.toml schemas/
COPY libs/common/pyproject.toml libs/common/
COPY libs/demo/pyproject.toml libs/demo/
COPY services/ingestion/pyproject.toml services/ingestion/
COPY services/features/pyproject.toml services/features/
COPY services/training/pyproject.toml services/training/
COPY services/registry/pyproject.toml services/registry/
COPY services/serving/pyproject.toml services/serving/
COPY services/monitoring/pyproject.toml services/monitoring/
COPY cli/pyproject.toml cli/
# Runtime dependencies only: --no-default-groups leaves out the dev and bench groups.
RUN /opt/uv/bin/uv sync --frozen --no-default-groups --no-install-workspace --python python3

COPY schemas schemas
COPY libs libs
COPY services services
COPY cli cli
# Not editable: the packages go into the virtualenv, which is all the runtime stage takes.
RUN /opt/uv/bin/uv sync --frozen --no-default-groups --no-editable --python python3


FROM ${BASE_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 flywheel && mkdir -p /mlflow && chown flywheel /mlflow
COPY --from=build /app/.venv /app/.venv
COPY datasets /app/datasets
COPY infra/docker/healthcheck.py infra/docker/bootstrap.py infra/docker/mlflow-auth.ini /app/bin/
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 SERVICE=ingestion
WORKDIR /app
USER flywheel
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=12 CMD ["python", "/app/bin/healthcheck.py"]
CMD ["sh", "-c", "exec python -m flywheel.${SERVICE}"]
