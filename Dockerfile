# The agent's server, lean (Deepgram, OpenAI and ElevenLabs keys; no offline engines):
#   docker build -t exotel-voice-agent .
# With the offline engines (Piper, Whisper, espeak-ng's Hindi voice) as well:
#   docker build --build-arg EXTRAS=offline -t exotel-voice-agent:offline .
FROM python:3.11-slim-bookworm

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN if [ "$EXTRAS" = "offline" ]; then \
      apt-get update && apt-get install -y --no-install-recommends espeak-ng && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app
# Dependencies first (pinned by the lock), so a code change does not reinstall them.
COPY pyproject.toml requirements.lock README.md ./
COPY bot/__init__.py bot/__init__.py
RUN pip install -c requirements.lock ".${EXTRAS:+[$EXTRAS]}" && pip uninstall -y exotel-voice-agent
COPY server.py alembic.ini ./
COPY bot bot
COPY pipelines pipelines
COPY serializers serializers
COPY configs configs

# Records, recordings and caches (or only the journal, with DATABASE_URL and OBJECT_STORE_URL).
RUN useradd --system --uid 10001 --home-dir /data agent && mkdir -p /data && chown agent /data
USER agent
ENV DATA_DIR=/data HOST=0.0.0.0 PORT=8000 WORKERS=0
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"
# SIGTERM drains: live calls run to their end for up to SHUTDOWN_GRACE_SECS.
STOPSIGNAL SIGTERM
CMD ["python", "server.py"]
