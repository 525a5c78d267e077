# EVEv2 demo. CPU by default (the project's small model); `--build-arg VARIANT=gpu` builds on a CUDA image with
# flash-attn for the real 7B model:
#   docker build -t eve-demo . && docker run -p 7860:7860 eve-demo
#   docker build --build-arg VARIANT=gpu -t eve-demo:gpu . && \
#     docker run --gpus all -p 7860:7860 -e EVE_MODEL=BAAI/EVE-7B-HD-v2.0 -e EVE_DEVICE=cuda eve-demo:gpu
# The install steps are the ones `make setup` runs (requirements.txt, plus requirements-gpu.txt on GPU).
ARG VARIANT=cpu

FROM python:3.11-slim AS cpu

FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 AS gpu
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*

FROM ${VARIANT} AS final
ARG VARIANT
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app
COPY --chown=user requirements.txt requirements-model.txt requirements-gpu.txt ./
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt \
    && if [ "$VARIANT" = "gpu" ]; then \
         /opt/venv/bin/pip install --no-cache-dir --no-build-isolation -r requirements-gpu.txt; fi
COPY --chown=user . .
USER user
ENV PATH=/opt/venv/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    EVE_DATA_DIR=/home/user/app/data \
    HF_HOME=/home/user/.cache/huggingface
EXPOSE 7860
CMD ["python", "app.py"]
