# The cgstvg GPU image for the Kubernetes work pool (prefect.yaml: gpu-pipeline, gpu-sweep).
#   docker build -t $CGSTVG_IMAGE . && docker push $CGSTVG_IMAGE
# torch's PyPI wheels bundle the CUDA runtime; the node needs only the NVIDIA driver and device plugin.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/cgstvg
# The checkout itself, .git included: DVC needs git for dvc.lock, `dvc metrics diff HEAD` and experiments.
COPY . .
RUN pip install --no-cache-dir -e .

# `dvc exp save` commits an experiment ref; the pod has no git identity of its own.
ENV GIT_AUTHOR_NAME=cgstvg-flow GIT_AUTHOR_EMAIL=cgstvg-flow@localhost \
    GIT_COMMITTER_NAME=cgstvg-flow GIT_COMMITTER_EMAIL=cgstvg-flow@localhost \
    PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1
