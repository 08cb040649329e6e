# syntax=docker/dockerfile:1
# The Puente gateway: the FastAPI process and its client libraries, nothing else. vLLM and torch
# live in the engine image (vllm/vllm-openai on GPUs, docker/engine-cpu.Dockerfile on CPUs), which
# the gateway reaches over HTTP.
#
#   docker build -f docker/gateway.Dockerfile -t puente-gateway:local .
#
# Config: mount puente.yaml at /etc/puente/puente.yaml (read-only is fine).
# Data (the SQLite file when no database_url is set): the volume at /var/lib/puente.
# Secrets: environment variables only (PUENTE_ADMIN_KEY, OPENAI_API_KEY, ...), never in the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/puente
ENV PATH=/opt/puente/bin:$PATH
WORKDIR /src

# Dependencies alone, read from pyproject.toml, so that editing server/ reuses this layer.
# Only [project].dependencies: the dev and engine extras never enter the image.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

COPY README.md ./
COPY server ./server
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('vllm', 'torch')))"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/puente/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PUENTE_CONFIG=/etc/puente/puente.yaml \
    PUENTE_DATA_DIR=/var/lib/puente
RUN groupadd --system --gid 10001 puente \
    && useradd --system --uid 10001 --gid puente --home-dir /var/lib/puente --no-create-home \
       --shell /usr/sbin/nologin puente \
    && install -d -o puente -g puente -m 0750 /var/lib/puente \
    && install -d -m 0755 /etc/puente
COPY --from=build /opt/puente /opt/puente

USER 10001:10001
WORKDIR /var/lib/puente
VOLUME ["/var/lib/puente"]
EXPOSE 8000
# python rather than curl: the slim image has no curl, and installing it only for this is weight.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["puente"]
CMD ["serve", "--config", "/etc/puente/puente.yaml", "--host", "0.0.0.0", "--port", "8000"]
