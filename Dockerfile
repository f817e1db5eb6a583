# The tracker server image. Build: docker build -t tracker .
# Run with PostGIS, Redis and a proxy: see compose.yaml and the README
# ("Run with Docker Compose").

# Browser assets (Leaflet) from npm, as scripts/setup.sh installs them.
FROM node:20-bookworm-slim AS web
WORKDIR /app/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund

# The package and its dependencies in a virtualenv, copied whole into the final stage so
# pip and its caches stay behind.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    TRACKER_SQL_DIR=/app/sql TRACKER_WEB_DIR=/app/web
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /app tracker
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY sql ./sql
COPY web ./web
COPY --from=web /app/web/node_modules ./web/node_modules
COPY deploy/entrypoint.sh ./deploy/entrypoint.sh
# Numeric, so runtimes that insist on a non-root user can verify it without /etc/passwd.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=2)"
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
