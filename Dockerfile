# syntax=docker/dockerfile:1
# The orchestrator (app velocity-orchestrator): API, router, loops, `velocity serve`.
# `fly deploy` builds it from the repository root; .dockerignore lists the only files it may see.
# The preview machines' image is preview-container/Dockerfile.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
WORKDIR /build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml requirements.lock README.md ./
# Runtime dependencies only, at the versions requirements.lock pins; rebuilt only when they change.
RUN python -m venv /opt/velocity \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime.txt \
 && /opt/velocity/bin/pip install --requirement runtime.txt --constraint requirements.lock
COPY src/ src/
RUN /opt/velocity/bin/pip install --no-deps .

FROM python:${PYTHON_VERSION}-slim-bookworm
RUN useradd --uid 10001 --user-group --create-home --no-log-init --shell /usr/sbin/nologin velocity \
 && install -d -o velocity -g velocity /var/lib/velocity
COPY --from=build /opt/velocity /opt/velocity
WORKDIR /app
# The preview machines' template, read at start (velocity.deploy.PREVIEW_TEMPLATE_PATH).
COPY preview-container/fly.toml preview-container/fly.toml

ENV PATH=/opt/velocity/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PREVIEW_PROVIDER=fly \
    VELOCITY_HOST=0.0.0.0 \
    VELOCITY_PORT=8000 \
    VELOCITY_DATA_DIR=/var/lib/velocity

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VELOCITY_PORT', '8000'), timeout=2)"]
# Previews outlive the SIGTERM of a deploy; the next orchestrator adopts them (docs/deploy-fly.md).
CMD ["velocity", "serve", "--keep-previews"]
