# Production image for streamscore.
#
#   docker build -t streamscore .
#   docker run --rm streamscore --help
#   docker run --rm -e STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS=... -v "$PWD/models:/models:ro" \
#       -e STREAMSCORE_MODEL__PATH=/models/model.txt streamscore run
#
# Two stages: the builder resolves the locked dependencies with uv into /app/.venv; the runtime
# stage gets only that virtual environment (no uv, no pip cache, no build tools) and runs it as an
# unprivileged user. Both stages use the same base image, so the venv's interpreter links match.

FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install uv==0.13.8

WORKDIR /app

# Third-party dependencies first, in their own layer: rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project --no-editable

# Then the project itself, installed as a regular (non-editable) package into the same venv.
# Keep this list in step with [tool.hatch.build.targets.wheel] packages in pyproject.toml
# (tests/deploy/test_compose.py checks it).
COPY streams/ streams/
COPY scoring/ scoring/
COPY api/ api/
COPY schemas/ schemas/
COPY settings/ settings/
COPY streamscore_cli/ streamscore_cli/
COPY telemetry/ telemetry/
RUN uv sync --frozen --no-dev --no-editable


FROM python:3.11.14-slim-bookworm AS runtime

# LightGBM's manylinux wheels link against the GNU OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 streamscore \
    && useradd --system --uid 10001 --gid streamscore --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin streamscore

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/app/.venv \
    PATH="/app/.venv/bin:${PATH}"

WORKDIR /app

# Owned by root and read-only for the service user: the process cannot modify its own code.
COPY --from=builder /app/.venv /app/.venv

USER 10001:10001

# The HTTP sidecar (`streamscore api`) and the stream scorer's Prometheus metrics
# (`streamscore run`, STREAMSCORE_STREAM__METRICS_PORT).
EXPOSE 8000 9464

ENTRYPOINT ["streamscore"]
CMD ["run"]
