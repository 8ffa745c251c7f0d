# CPU worker image for dynaset: runs `dynaset build`, a Dask worker, the Dask scheduler or the Prefect
# server (compose.yaml brings all of them up; docs/scaling.md).
#   docker build -t dynaset .
#   docker run --rm -v /data:/data dynaset dynaset build --source amass=/data/AMASS --out /data/dynaset
#   docker run --rm -v /data:/data dynaset dynaset worker tcp://scheduler:8786   # 1 thread per process
# GPU worker image (MuJoCo Warp simulate tasks, --sim-backend gpu; warp-lang bundles its CUDA runtime,
# the host needs an NVIDIA driver R580+ and the NVIDIA container toolkit):
#   docker build --target gpu -t dynaset-gpu .
#   docker run --rm --gpus device=0 dynaset-gpu dynaset worker tcp://scheduler:8786 --gpu
# Python 3.11: the pinned torch (optional [smpl] extra) is cp311-only; see docs/python_version.md.
FROM python:3.11-slim-bookworm AS cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PREFECT_HOME=/var/lib/dynaset/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

# /var/lib/dynaset/{server,work}: mount points of compose.yaml's volumes (the Prefect server's
# database; the shared working mirror DYNASET_WORK_DIR), owned by the user the containers run as
RUN useradd --create-home --uid 1000 dynaset \
    && mkdir -p /var/lib/dynaset/prefect /var/lib/dynaset/server /var/lib/dynaset/work \
    && chown -R dynaset /var/lib/dynaset

WORKDIR /opt/dynaset
COPY pyproject.toml README.md storage_layout.md ./
COPY pipeline ./pipeline
COPY flows ./flows
COPY schemas ./schemas
RUN pip install . && dynaset --help > /dev/null && dynaset worker --help > /dev/null

USER dynaset
WORKDIR /home/dynaset
CMD ["dynaset", "--help"]

# --- GPU worker: the same image plus MuJoCo Warp; Warp's kernel cache persists in a volume-able dir
FROM cpu AS gpu
USER root
ENV DYNASET_WARP_CACHE=/var/lib/dynaset/warp
RUN mkdir -p /var/lib/dynaset/warp && chown dynaset /var/lib/dynaset/warp \
    && cd /opt/dynaset && pip install ".[gpu]" && python -c "import mujoco_warp, warp"
USER dynaset
WORKDIR /home/dynaset
CMD ["dynaset", "worker", "--help"]

# the default target (`docker build .`) stays the CPU image
FROM cpu
