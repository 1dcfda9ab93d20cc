"""Settings: one frozen object per process, built once from the environment.

A missing or malformed value fails start-up with a :class:`ConfigError`
that names the variable (never its value). ``APP_ENV=production`` adds the
production checks of DESIGN.md: an external PostgreSQL, TLS on the gRPC
listener, and key material (see :mod:`rap_control.keys.settings`; signing
keys join these checks with the data plane).
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rap_common.errors import ConfigError
from rap_control.keys.settings import KeySettings
from rap_control.sessions.lifecycle import SessionTiming

__all__ = ["ConfigError", "Environment", "Settings"]


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class TrustMode(StrEnum):
    """How clients verify a worker's direct data-plane endpoint."""

    SMOKE_INSECURE = "smoke_insecure"
    PUBLIC_CA = "public_ca"
    PLATFORM_CA = "platform_ca"


@dataclass(frozen=True)
class Settings:
    """Everything the control plane reads from its environment."""

    app_env: Environment
    # URLs may embed a password: keep them out of repr().
    database_url: str | None = field(repr=False)
    redis_url: str | None = field(repr=False)
    data_dir: Path
    listen_host: str
    listen_port: int
    tls_cert_file: Path | None
    tls_key_file: Path | None
    log_level: str
    db_pool_size: int
    keys: KeySettings = field(default_factory=lambda: KeySettings("local", None, None, {}))
    # Admins of this organization may manage the platform's encryption keys over the API.
    operator_organization_id: uuid.UUID | None = None
    # The worker-facing listener (mTLS under the platform CA); port 0 picks a free one.
    worker_listen_host: str = "127.0.0.1"
    worker_listen_port: int = 50052
    # Extra names for the worker listener's certificate (besides localhost and its IP).
    worker_tls_names: tuple[str, ...] = ()
    # A lease lapses this long after the last heartbeat that renewed it.
    session_lease_ttl_seconds: int = 30
    worker_heartbeat_seconds: int = 10
    session_idle_timeout_seconds: int = 1800
    session_max_seconds: int = 28800
    # Data plane: how long an attachment's token lives, how clients may trust a
    # worker's direct endpoint, and the gateway's public URL (none: no gateway).
    data_plane_token_ttl_seconds: int = 120
    direct_trust_mode: TrustMode = TrustMode.PLATFORM_CA
    gateway_url: str | None = None
    # The CA of the gateway's TLS certificate, offered to clients with the gateway
    # candidate; without it clients verify the gateway with their system trust.
    gateway_ca_file: Path | None = None

    @property
    def signed_token_overlap_seconds(self) -> int:
        """How long a retired signing key stays published: past any token it signed."""
        return max(self.data_plane_token_ttl_seconds, self.session_lease_ttl_seconds) + 60

    @property
    def session_timing(self) -> SessionTiming:
        return SessionTiming(
            self.session_lease_ttl_seconds,
            self.worker_heartbeat_seconds,
            self.session_idle_timeout_seconds,
            self.session_max_seconds,
        )

    @property
    def production(self) -> bool:
        return self.app_env is Environment.PRODUCTION

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check the settings; raise :class:`ConfigError` on any problem."""
        env = os.environ if env is None else env
        app_env = _choice(env, "APP_ENV", Environment, Environment.DEVELOPMENT)
        host, port = _listen_address(env.get("RAP_LISTEN_ADDRESS", "127.0.0.1:50051"))
        worker_host, worker_port = _listen_address(
            env.get("RAP_WORKER_LISTEN_ADDRESS", "127.0.0.1:50052"), "RAP_WORKER_LISTEN_ADDRESS"
        )
        cert, key = _optional_file(env, "RAP_TLS_CERT_FILE"), _optional_file(env, "RAP_TLS_KEY_FILE")
        if (cert is None) != (key is None):
            raise ConfigError("RAP_TLS_CERT_FILE and RAP_TLS_KEY_FILE must be set together")
        settings = cls(
            app_env=app_env,
            database_url=_database_url(env),
            redis_url=env.get("REDIS_URL") or None,
            data_dir=default_data_dir(env),
            listen_host=host,
            listen_port=port,
            tls_cert_file=cert,
            tls_key_file=key,
            log_level=_choice(env, "RAP_LOG_LEVEL", _LogLevel, _LogLevel.INFO).value,
            db_pool_size=_int(env, "RAP_DB_POOL_SIZE", 10, low=1, high=200),
            keys=KeySettings.from_env(env, production=app_env is Environment.PRODUCTION),
            operator_organization_id=_optional_uuid(env, "RAP_OPERATOR_ORGANIZATION_ID"),
            worker_listen_host=worker_host,
            worker_listen_port=worker_port,
            worker_tls_names=tuple(
                n.strip() for n in env.get("RAP_WORKER_TLS_NAMES", "").split(",") if n.strip()
            ),
            session_lease_ttl_seconds=_int(env, "RAP_SESSION_LEASE_TTL_SECONDS", 30, low=2, high=3600),
            worker_heartbeat_seconds=_int(env, "RAP_WORKER_HEARTBEAT_SECONDS", 10, low=1, high=600),
            session_idle_timeout_seconds=_int(
                env, "RAP_SESSION_IDLE_TIMEOUT_SECONDS", 1800, low=10, high=7 * 86400
            ),
            session_max_seconds=_int(env, "RAP_SESSION_MAX_SECONDS", 28800, low=60, high=30 * 86400),
            data_plane_token_ttl_seconds=_int(env, "RAP_DATA_PLANE_TOKEN_TTL_SECONDS", 120, low=5, high=3600),
            direct_trust_mode=_choice(
                env, "DATA_PLANE_DIRECT_WORKER_TLS_TRUST_MODE", TrustMode, TrustMode.PLATFORM_CA
            ),
            gateway_url=_wss_url(env, "RAP_GATEWAY_URL"),
            gateway_ca_file=_optional_file(env, "RAP_GATEWAY_CA_FILE"),
        )
        if settings.session_lease_ttl_seconds < 2 * settings.worker_heartbeat_seconds:
            raise ConfigError(
                "RAP_SESSION_LEASE_TTL_SECONDS must be at least twice RAP_WORKER_HEARTBEAT_SECONDS, "
                "or one late heartbeat would fail every session"
            )
        if settings.production:
            settings.check_production()
        return settings

    def check_production(self) -> None:
        """The production guard's start-up checks."""
        if self.database_url is None:
            raise ConfigError(
                "APP_ENV=production needs DATABASE_URL: the embedded PostgreSQL is for development only"
            )
        if not self.tls:
            raise ConfigError("APP_ENV=production needs TLS: set RAP_TLS_CERT_FILE and RAP_TLS_KEY_FILE")


E = TypeVar("E", bound=StrEnum)


def _wss_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    if not raw.startswith("wss://") or len(raw) > 300:
        raise ConfigError(f"{name} must be a wss:// URL")
    return raw


class _LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _choice(env: Mapping[str, str], name: str, kind: type[E], default: E) -> E:
    raw = env.get(name)
    if not raw:
        return default
    for member in kind:
        if raw.strip().lower() == member.value.lower():
            return member
    raise ConfigError(f"{name} must be one of {', '.join(m.value for m in kind)}")


DEV_DATA_DIR = ".rap-data"


def default_data_dir(env: Mapping[str, str], cwd: Path | None = None) -> Path:
    """Where the embedded database and development keys live, found the same way by every
    command: RAP_DATA_DIR when set; else ``./.rap-data`` when the current directory has
    one (``scripts/dev`` keeps its data there); else ``~/.local/share/rap``."""
    if env.get("RAP_DATA_DIR"):
        return Path(env["RAP_DATA_DIR"]).expanduser()
    local = (cwd or Path.cwd()) / DEV_DATA_DIR
    if local.is_dir():
        return local
    return Path.home() / ".local" / "share" / "rap"


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def _optional_uuid(env: Mapping[str, str], name: str) -> uuid.UUID | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an organization id (a UUID)") from None


def _optional_file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ConfigError(f"{name} names a file that does not exist or cannot be read")
    return path


def _database_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("DATABASE_URL")
    if not raw:
        return None
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a valid database URL") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError("DATABASE_URL must be a PostgreSQL URL (postgresql://...)")
    # One driver for all: psycopg2, whatever the URL said.
    return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def _listen_address(raw: str, name: str = "RAP_LISTEN_ADDRESS") -> tuple[str, int]:
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{name} must be HOST:PORT, e.g. 127.0.0.1:50051")
    host = host.strip("[]")
    if host not in ("localhost", ""):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{name} must name an IP address or localhost") from None
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - an empty host means every interface, as asked
