FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_URL=sqlite:////app/data/fluxbot.db

WORKDIR /app
RUN useradd --create-home --uid 10001 fluxbot

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install --no-cache-dir . \
    && mkdir -p /app/data \
    && chown fluxbot:fluxbot /app/data

USER fluxbot
VOLUME ["/app/data"]
# Only used when CALLBACK_PUBLIC_URL is set (the callback receiver listens on CALLBACK_LISTEN).
EXPOSE 8080
CMD ["fluxbot"]
