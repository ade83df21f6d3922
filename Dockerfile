# The worker image of compose.yaml: the provisioner package and its console scripts.
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY workflows ./workflows
COPY workers ./workers
COPY simulators ./simulators
RUN pip install --no-cache-dir .
CMD ["celery", "-A", "workers", "worker", "--loglevel=info"]
