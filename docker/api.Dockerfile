# The imagegen HTTP API alone: no torch, no CUDA (the API validates against model cards, enqueues
# and reads results; the workers do the math). Build from the repository root:
#   docker build -f docker/api.Dockerfile -t imagegen-api .
# docker-compose.yml builds it as the `api` service; docs/deploy.md says how it is deployed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The API's dependencies first, in their own layer (reused while only the code changes): the `api`
# extra of pyproject.toml, read from there so that the list has one home; it holds no torch.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['api']))" \
        > /tmp/api-requirements.txt \
    && pip install -r /tmp/api-requirements.txt \
    && rm /tmp/api-requirements.txt

# The project itself, editable and with --no-deps (its base dependencies name torch). Editable, so
# that the code, the web page's static files and the model store are read from /app as copied.
# The store's weights come along although the API reads only the cards: a few MB, and the API then
# lists exactly the store the worker image bakes in. Mount another store at /models with
# MODEL_STORE=/models on the API and the workers alike (docs/deploy.md). Only the packages the API
# imports are copied (the layers of docs/layout.md: the store, the contract, the service); the
# math, the worker and the CLI stay out, and import-linter keeps the API from needing them.
COPY README.md ./
COPY model_store ./model_store
COPY contract ./contract
COPY service ./service
RUN pip install --no-deps -e .

RUN useradd --system --uid 10001 --user-group --home-dir /home/imagegen --create-home imagegen
USER imagegen

EXPOSE 8000

# liveness only (/healthz): /readyz also wants a live worker, and an API without workers is still
# healthy (it queues); urllib because the slim image has no curl
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# every setting but where to listen comes from the environment (REDIS_URL, RESULT_TTL...)
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
