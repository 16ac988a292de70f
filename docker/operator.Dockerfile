# The operator image: aiml024 with the `operator` extra (kopf, opa-python-client, and
# kubernetes_asyncio for its own API calls) and `s3`
# (it reads each run's registration record from the artifact store), nothing for training or
# serving. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/aiml024/operator:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY constraints.txt constraints.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install -c constraints.txt ".[operator,s3]"

FROM python:3.11-slim
COPY --from=build /install /usr/local
# Default policies and their pin (every module the pin names must be there, or the gate
# denies); the install mounts the aiml024-policies ConfigMap over them.
COPY policies/promotion.rego policies/deployment.rego policies/data.json policies/policy-pin.json /policies/
ENV AIML024_POLICY_DIR=/policies PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 9443 8080
ENTRYPOINT ["python", "-m", "aiml024.operator"]
