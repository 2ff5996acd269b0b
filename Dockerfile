FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_URL=sqlite:////app/data/fluxbot.db \
    METRICS_LISTEN=0.0.0.0:9100

WORKDIR /app
RUN useradd --create-home --uid 10001 fluxbot

# Pinned dependency versions (constraints.txt) make every build install the same packages. The postgres extra
# (asyncpg) lets the same image run on SQLite or, with DATABASE_URL=postgresql://..., as one of several processes.
COPY pyproject.toml README.md constraints.txt ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install --no-cache-dir -c constraints.txt '.[postgres]' \
    && mkdir -p /app/data \
    && chown fluxbot:fluxbot /app/data

USER fluxbot
VOLUME ["/app/data"]
# 9100: /healthz and /metrics (METRICS_LISTEN). 8080: only when CALLBACK_PUBLIC_URL is set (CALLBACK_LISTEN).
EXPOSE 9100 8080
# Healthy when the gateway is connected and the database answers; skipped when METRICS_LISTEN is unset.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["python", "-c", "import os, sys, urllib.request; listen = os.environ.get('METRICS_LISTEN'); sys.exit(0) if not listen else urllib.request.urlopen('http://127.0.0.1:' + listen.rpartition(':')[2] + '/healthz', timeout=4)"]
# A stopped container is given time to finish submits under way (SIGTERM, then up to 10 s).
STOPSIGNAL SIGTERM
CMD ["fluxbot", "run"]
