# tracker server image. Build: docker build -t tracker .
# Run:   docker run -e DATABASE_URL=... -e TRACKER_ADMIN_TOKEN=... -p 8000:8000 tracker
FROM node:20-bookworm-slim AS web
WORKDIR /app/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TRACKER_SQL_DIR=/app/sql TRACKER_WEB_DIR=/app/web
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
COPY sql ./sql
COPY web ./web
COPY --from=web /app/web/node_modules ./web/node_modules
RUN useradd --system --uid 1000 tracker
USER tracker
EXPOSE 8000 5055
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["sh", "-c", "tracker migrate && exec tracker serve --host 0.0.0.0 --port 8000 --workers ${WORKERS:-2}"]
