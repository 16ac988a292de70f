# The runtime image: workflow steps (python -m aiml024.runtime STEP) and model serving
# (MLServer with aiml024's runtime class). No kopf. Build from the repository root:
#   docker build -f docker/runtime.Dockerfile -t ghcr.io/aiml024/runtime:0.1.0 .
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY constraints.txt constraints.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install -c constraints.txt ".[runtime,serve,s3]"

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
ENV PYTHONUNBUFFERED=1 HOME=/tmp
USER 65532:65532
ENTRYPOINT ["python", "-m", "aiml024.runtime"]
