# syntax=docker/dockerfile:1
# One image for the three services; the command chooses the service.
#
#   docker build -t postcall:0.1.0 .                  # the production image (the last stage)
#   docker build --target demo -t postcall:dev .      # plus the demo sink's SMTP server (dev overlay)
#   docker run --rm postcall:0.1.0 python -m services.extractor     # or services.router, services.dispatcher
#   docker run --rm postcall:0.1.0 postcall dlq list --service dispatcher
#
# Pin the base by digest in your pipeline: --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ── build: the project's wheel, installed with its dependencies into a virtualenv ──────────────────
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY services/ services/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/postcall \
 && /opt/postcall/bin/pip install /wheels/postcall-*.whl

# ── runtime: the virtualenv on the same base, no compilers, no pip cache, a numeric non-root user ──
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 postcall \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin postcall
COPY --from=build /opt/postcall /opt/postcall
# bytecode was compiled at install time; the root filesystem is read-only in Kubernetes
ENV PATH=/opt/postcall/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
USER 10001:10001
# /metrics, /healthz, /readyz
EXPOSE 9400
CMD ["python", "-m", "services.router"]

# ── demo: the runtime plus aiosmtpd, for python -m services.devkit.sink in the dev overlay ──────────
FROM runtime AS demo
USER 0
RUN /opt/postcall/bin/pip install --no-cache-dir "aiosmtpd>=1.4"
USER 10001:10001

# ── the default target ──────────────────────────────────────────────────────────────────────────────
FROM runtime AS production
