"""One settings object for the whole product, read from the environment and `.env`.

It is built once at start-up (server, CLI, tests) and passed in; nothing deeper in the code
reads `os.environ`. A missing or malformed value fails at start-up with one line naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXOTEL_BASE_URLS = {"singapore": "https://api.exotel.com", "mumbai": "https://api.in.exotel.com"}
# Databases the store runs on, and the drivers it accepts for each (sync names get the async one).
DATABASE_DRIVERS = {"sqlite": ("", "aiosqlite", "pysqlite"), "postgresql": ("", "asyncpg", "psycopg2", "psycopg"),
                    "postgres": ("",)}
DATABASE_URL_FORMS = "sqlite+aiosqlite:///path/calls.db or postgresql+asyncpg://user:password@host:5432/db"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message is one line and names it."""


class Settings(BaseSettings):
    """Every setting the server and the CLI read. `.env.example` lists them all."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- server -------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Interface uvicorn listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port uvicorn listens on.")
    public_base_url: str = Field(
        "http://localhost:8000",
        validation_alias=AliasChoices("public_base_url", "our_base_url", "webhook_base_url"),
        description="How Exotel reaches this server (media socket, dynamic URL, status callback).",
    )
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    workers: int = Field(
        1, ge=0, le=64, description="Server processes sharing the port; 0 = two per CPU core."
    )
    live_call_limit: int = Field(
        0, ge=0, le=10000,
        description="Live calls one worker process takes before /health answers 503 \"full\", so a "
        "load balancer sends new calls to other nodes (0 = no limit). Calls are never refused for it.",
    )
    shutdown_grace_secs: float = Field(
        600.0, ge=0, le=86400,
        description="On SIGTERM, live calls may run this long to their natural end; then the "
        "campaign's apology is said and they are closed.",
    )
    http_header_timeout_secs: float = Field(
        10.0, gt=0, le=300,
        description="A request's line and headers must arrive within this long of the connection "
        "opening (or of the request's first byte); slower or silent connections are closed.",
    )
    http_idle_timeout_secs: float = Field(
        5.0, gt=0, le=3600,
        description="A kept-alive connection with no request, or a request body with no bytes "
        "arriving, is closed after this long.",
    )

    # --- media socket -------------------------------------------------------------------
    media_auth_user: str | None = Field(None, description="Basic-auth user Exotel must send.")
    media_auth_password: str | None = Field(None, description="Basic-auth password.")
    exotel_payload_bytes: int = Field(
        3200, description="Outbound media payload size: a multiple of 320 in 3200..100000."
    )
    exotel_sample_rate: int | None = Field(
        None, description="Force the stream's sample rate; default: from the `start` message."
    )
    playback_lead_secs: float = Field(
        0.4, ge=0.0, le=5.0, description="How far ahead of the caller's ears audio is sent."
    )
    mark_grace_secs: float = Field(
        1.5, ge=0.0, le=30.0, description="Extra wait for a mark echo after playback should end."
    )
    handshake_timeout_secs: float = Field(
        10.0, gt=0, description="How long to wait for Exotel's `start` after the socket opens."
    )
    max_call_secs: float = Field(
        3600.0, gt=0, description="Hang up (gracefully) after this long; Exotel's limit is 60 min."
    )

    # --- providers (keys are secrets: never logged; base URLs let tests point at fakes) ---
    deepgram_api_key: SecretStr | None = Field(None, description="Deepgram key (STT).")
    deepgram_base_url: str | None = Field(None, description="Deepgram API base, e.g. https://api.deepgram.com.")
    openai_api_key: SecretStr | None = Field(None, description="OpenAI key (LLM).")
    openai_base_url: str | None = Field(None, description="OpenAI-compatible base, e.g. https://api.openai.com/v1.")
    elevenlabs_api_key: SecretStr | None = Field(None, description="ElevenLabs key (TTS).")
    elevenlabs_base_url: str = Field(
        "https://api.elevenlabs.io", description="ElevenLabs API base (its websocket is derived)."
    )

    # --- Exotel REST (outbound dialling) --------------------------------------------------
    exotel_account_sid: str | None = Field(
        None, validation_alias=AliasChoices("exotel_account_sid", "exotel_sid"),
        description="Exotel account SID. Seed name: EXOTEL_SID.",
    )
    exotel_api_key: str | None = Field(None, description="Exotel API key (HTTP Basic user).")
    exotel_api_token: SecretStr | None = Field(None, description="Exotel API token (never logged).")
    exotel_caller_id: str | None = Field(
        None, validation_alias=AliasChoices("exotel_caller_id", "exotel_virtual_number"),
        description="ExoPhone shown to the customer. Seed name: EXOTEL_VIRTUAL_NUMBER.",
    )
    exotel_app_id: str | None = Field(
        None, validation_alias=AliasChoices("exotel_app_id", "exotel_exophlo_id"),
        description="Flow (app) id whose Voicebot applet points here. Seed name: EXOTEL_EXOPHLO_ID.",
    )
    exotel_region: Literal["singapore", "mumbai"] = Field("singapore", description="Exotel cluster.")
    exotel_api_base_url: str | None = Field(None, description="Exotel API base; default from EXOTEL_REGION.")

    # --- API and callbacks -------------------------------------------------------------
    api_token: SecretStr | None = Field(None, description="Bearer token protecting /calls (empty: open).")
    callback_secret: SecretStr | None = Field(
        None, description="Signs the callback and dynamic-URL addresses handed to Exotel."
    )

    # --- storage --------------------------------------------------------------------------
    data_dir: Path = Field(PROJECT_ROOT / "data", description="Recordings, caches, the SQLite file.")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; empty: sqlite+aiosqlite:///DATA_DIR/calls.db."
    )
    object_store_url: str | None = Field(
        None, description="s3://bucket/prefix for prepared speech and recordings, readable from every "
        "node (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY); empty: folders under DATA_DIR.",
    )
    object_store_endpoint: str | None = Field(
        None, description="An S3-compatible service's URL (MinIO, Ceph, R2); empty: AWS S3."
    )
    object_store_region: str | None = Field(None, description="The bucket's region; empty: AWS_REGION.")
    database_timeout_secs: float = Field(
        30.0, gt=0, le=600,
        description="Longest one database operation waits (SQLite's busy timeout, PostgreSQL's "
                    "connect and statement timeouts, a free pooled connection).",
    )
    database_retry_secs: float = Field(
        60.0, ge=0, le=3600,
        description="How long a call record write is retried (with backoff) before it is left "
                    "to the journal under DATA_DIR/journal, which is replayed when the database answers.",
    )
    journal_replay_secs: float = Field(
        5.0, gt=0, le=600, description="How often the journal is replayed while it holds entries."
    )
    journal_max_entries: int = Field(
        50_000, ge=1, description="The journal refuses writes beyond this many entries (logged loudly)."
    )
    journal_max_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="... or beyond this many bytes."
    )
    lead_lookup_timeout_secs: float = Field(
        1.0, gt=0, le=30,
        description="How long a call start waits for its lead from the store before using the "
                    "journal and the stream's custom parameters.",
    )
    worker_heartbeat_secs: float = Field(
        5.0, gt=0, le=300, description="How often each server process records in the database that it is alive."
    )
    worker_lost_after_secs: float = Field(
        30.0, gt=0, le=3600,
        description="A live call whose server process has not recorded a heartbeat for this long is "
        "closed (end_reason worker_lost) by any server's sweep.",
    )

    # --- campaigns ----------------------------------------------------------------------
    campaigns_dir: Path = Field(PROJECT_ROOT / "configs", description="Folder of campaign YAMLs.")
    default_campaign: str = Field("real_estate", description="Campaign used when none is given.")
    exotel_calls_per_minute: int = Field(
        200, ge=1, le=200,
        description="Dials per minute for the whole Exotel account, held across every job worker "
        "(Exotel answers 429 above 200).",
    )
    job_worker_concurrency: int = Field(
        20, ge=1, le=500, description="Campaign jobs (dials, settlements) one `bot worker` runs at once."
    )
    job_sweep_secs: int = Field(
        15, ge=1, le=60,
        description="How often a job worker's sweep settles what no event settled (calls whose end was "
        "missed, leads left mid-dial); must divide 60.",
    )
    reconcile_after_secs: float = Field(
        120.0, ge=1, le=3600,
        description="A lead claimed this long ago with no call on record is reconciled with Exotel: "
        "its call adopted, or dialled again only if Exotel has none.",
    )

    @field_validator("exotel_payload_bytes")
    @classmethod
    def _payload_rule(cls, value: int) -> int:
        if value % 320 or not 3200 <= value <= 100_000:
            raise ValueError("must be a multiple of 320 between 3200 and 100000 (Exotel's rule)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_rule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            url = make_url(value)
        except Exception:
            raise ValueError(f"not a database URL; use {DATABASE_URL_FORMS}") from None
        backend, _, driver = url.drivername.partition("+")
        if driver not in DATABASE_DRIVERS.get(backend, ()):
            raise ValueError(f"unsupported database {url.drivername!r}; use {DATABASE_URL_FORMS}")
        if backend != "sqlite" and not url.database:
            raise ValueError(f"no database name; use {DATABASE_URL_FORMS}")
        return value

    @field_validator("job_sweep_secs")
    @classmethod
    def _sweep_rule(cls, value: int) -> int:
        if 60 % value:
            raise ValueError("must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)")
        return value

    @field_validator("exotel_sample_rate")
    @classmethod
    def _rate_rule(cls, value: int | None) -> int | None:
        if value is not None and value not in (8000, 16000, 24000):
            raise ValueError("must be 8000, 16000 or 24000")
        return value

    @field_validator("object_store_url")
    @classmethod
    def _object_store_rule(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if (not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_.-]+)*/?", value)
                or any(part in (".", "..") for part in value[5:].split("/"))):
            raise ValueError("must be s3://bucket or s3://bucket/prefix")
        return value.rstrip("/")

    @field_validator("public_base_url", "elevenlabs_base_url", "deepgram_base_url", "openai_base_url",
                     "object_store_endpoint")
    @classmethod
    def _url_rule(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator(
        "deepgram_api_key", "openai_api_key", "elevenlabs_api_key", "exotel_account_sid",
        "exotel_api_key", "exotel_api_token", "exotel_caller_id", "exotel_app_id",
        "exotel_api_base_url", "api_token", "callback_secret", "database_url",
        "media_auth_user", "media_auth_password", "exotel_sample_rate", "object_store_endpoint",
        "object_store_region", mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("exotel_region", mode="before")
    @classmethod
    def _region_words(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _derived(self) -> "Settings":
        if self.exotel_api_base_url is None:
            self.exotel_api_base_url = EXOTEL_BASE_URLS[self.exotel_region]
        elif not self.exotel_api_base_url.startswith(("http://", "https://")):
            raise ValueError("EXOTEL_API_BASE_URL must start with http:// or https://")
        self.exotel_api_base_url = self.exotel_api_base_url.rstrip("/")
        if self.database_url is None:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'calls.db'}"
        return self

    @property
    def store_url(self) -> str:
        """DATABASE_URL, or the SQLite file under DATA_DIR (filled in when the settings load)."""
        if self.database_url is None:
            raise SettingsError("DATABASE_URL was never filled in")
        return self.database_url

    @model_validator(mode="after")
    def _heartbeat_pair(self) -> "Settings":
        if self.worker_lost_after_secs < 3 * self.worker_heartbeat_secs:
            raise ValueError("WORKER_LOST_AFTER_SECS must be at least three WORKER_HEARTBEAT_SECS "
                             "(a busy process must not be taken for a dead one)")
        return self

    @model_validator(mode="after")
    def _auth_pair(self) -> "Settings":
        if bool(self.media_auth_user) != bool(self.media_auth_password):
            raise ValueError(
                "MEDIA_AUTH_USER and MEDIA_AUTH_PASSWORD must be set together (or neither)"
            )
        return self

    @property
    def media_auth_enabled(self) -> bool:
        return bool(self.media_auth_user and self.media_auth_password)

    @property
    def journal_dir(self) -> Path:
        """Record writes waiting for the database (shared by every process of this machine)."""
        return self.data_dir / "journal"

    @property
    def recordings_dir(self) -> Path:
        """Where this node's recorder writes each call's WAV as the call goes."""
        return self.data_dir / "recordings"

    @property
    def speech_cache_dir(self) -> Path:
        """Where pre-synthesized lines live (shared by every worker process)."""
        return self.data_dir / "cache" / "speech"

    @property
    def exotel_configured(self) -> bool:
        """All five Exotel credentials are set (else dialling uses the simulator)."""
        return all([self.exotel_account_sid, self.exotel_api_key, self.exotel_api_token,
                    self.exotel_caller_id, self.exotel_app_id])

    def require_exotel(self) -> None:
        """SettingsError naming every missing EXOTEL_* setting."""
        missing = [name.upper() for name in ("exotel_account_sid", "exotel_api_key", "exotel_api_token",
                                             "exotel_caller_id", "exotel_app_id") if not getattr(self, name)]
        if missing:
            raise SettingsError(f"dialling needs {', '.join(missing)} (see .env.example)")

    @property
    def elevenlabs_ws_url(self) -> str:
        """ElevenLabs' websocket base, derived from its HTTP base (http->ws, https->wss)."""
        base = self.elevenlabs_base_url or "https://api.elevenlabs.io"
        if base.startswith(("ws://", "wss://")):
            return base
        return "ws" + base.removeprefix("http")


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_USERINFO = re.compile(r"[^\s/@'\"]+@")  # user:password@ of a URL (with or without its scheme)
_QUERY = re.compile(r"\?[^\s'\"]*")  # a URL's query string (may carry a key)


def mask_credentials(text: str) -> str:
    """`text` with any URL's user:password and query string replaced by ***."""
    return _QUERY.sub("?***", _USERINFO.sub("***@", text))


def _shown(name: str, value: object) -> str:
    """How a bad setting's value appears in its error: never a secret, never a credential."""
    if not name or not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return ""
    if _SECRET_NAME.search(name):
        return " (value hidden)"
    return f" (got {mask_credentials(str(value))[:120]!r})"


def _one_line(error: ValidationError) -> str:
    """Render pydantic's multi-line report as `NAME: reason` pairs on one line, with no secret
    in it: a secret setting's value is never shown, and URLs lose their credentials."""
    parts = []
    for item in error.errors():
        name = "_".join(str(p) for p in item.get("loc", ())).upper()
        reason = mask_credentials(item.get("msg", "invalid").removeprefix("Value error, "))
        shown = _shown(name, item.get("input"))
        parts.append(f"{name}: {reason}{shown}" if name else reason)
    return "invalid setting: " + "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Build the settings or raise SettingsError with one line that names the culprit."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None
