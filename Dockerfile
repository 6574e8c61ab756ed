# syntax=docker/dockerfile:1
# One image for every service (extractor, router, dispatcher, recorder, ingress, api) and the postcall CLI;
# the command chooses.
#
#   docker build -t postcall:0.1.0 .                  # the production image (the last stage)
#   docker build --target demo -t postcall:dev .      # plus the demo sink's SMTP server (dev overlay)
#   docker run --rm postcall:0.1.0 python -m services.extractor     # or services.router, services.dispatcher
#   docker run --rm postcall:0.1.0 postcall dlq list --service dispatcher
#
# Nothing is resolved at build time: the base image is pinned by digest (the multi-platform index of
# python:3.11.15-slim-bookworm, as docker-library/repo-info recorded it), and every Python package,
# setuptools for the build included, comes from requirements/*.lock with its sha256 (`make lock`).
# Bumping the base: take the new tag's index digest from `docker buildx imagetools inspect <tag>`.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

# ── build: the project's wheel and its locked dependencies, installed into a virtualenv ───────────
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/ requirements/
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements/build.lock \
 && python -m venv /opt/postcall \
 && /opt/postcall/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY services/ services/
# --no-build-isolation: the locked setuptools above, not whatever PyPI serves today
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/postcall/bin/pip install --no-deps --no-index /wheels/postcall-*.whl

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
COPY requirements/demo.lock /tmp/demo.lock
RUN /opt/postcall/bin/pip install --no-cache-dir --require-hashes --no-deps --only-binary=:all: -r /tmp/demo.lock \
 && rm /tmp/demo.lock
USER 10001:10001

# ── the default target ──────────────────────────────────────────────────────────────────────────────
FROM runtime AS production
