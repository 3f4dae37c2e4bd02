"""Configuration: one frozen settings object from a TOML file and the environment.

Precedence: built-in defaults < TOML file (``--config`` or ``TALICADA_CONFIG``)
< ``TALICADA_*`` environment variables for the scalar settings. A missing or
malformed value stops startup with a message naming it (:class:`SettingsError`).

Platforms are configured in the TOML file only (``[[platforms]]`` tables); with
none configured the broker fronts one ``local`` platform that runs the test
tasks, which is what embedded mode needs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from talicada import constants
from talicada.events.streams import Role
from talicada.federation.config import FederationSettings, RemotePlatform
from talicada.redisconn import PoolOptions

PositiveInt = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]


class SettingsError(Exception):
    """Configuration that cannot be used; the message names the setting."""


class _Frozen(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Preparation(_Frozen, frozen=True):
    """Configured preparation times (seconds), used until there is history.

    ``image`` maps executable kinds to image-caching time; ``data`` maps data
    kinds to a fixed staging overhead, to which ``bytes / staging_rate`` is added
    when the size is known.
    """

    #: Seconds to make an image available, by executable kind.
    image: dict[str, float] = msgspec.field(
        default_factory=lambda: {
            "docker-container": 60.0,
            "singularity-container": 60.0,
            "jupyter-notebook": 60.0,
        }
    )
    #: Fixed seconds to stage one data item, by data kind.
    data: dict[str, float] = msgspec.field(
        default_factory=lambda: {
            "simple-data-resource": 10.0,
            "S3-data-resource": 30.0,
            "rucio-data-resource": 60.0,
            "ivoa-data-resource": 30.0,
            "skao-data-resource": 60.0,
        }
    )
    #: Bytes per second assumed for staging data of known size.
    staging_rate: Annotated[float, Meta(gt=0)] = 100 * 2**20
    #: Seconds to allocate storage.
    storage: Annotated[float, Meta(ge=0)] = 5.0
    #: Seconds to launch the executable.
    launch: Annotated[float, Meta(ge=0)] = 10.0
    #: Seconds to release everything after the window.
    release: Annotated[float, Meta(ge=0)] = 10.0


class AnswerTtl(_Frozen, frozen=True):
    """How long a NO answer stays true, by what caused it (seconds; ``[answer_ttl]``).

    fixed: the platforms' configuration refused it (a kind, a size or duration
    limit, data it cannot fetch, a price): true until the broker is reconfigured.
    advice: a back end's service refused it (an image missing from its catalogue).
    capacity: the calendar was full, or a service did not answer: true only
    until a hold expires or a session ends, so short.
    A YES answer stays true until its offers expire (``offer_ttl``).
    """

    fixed: Annotated[float, Meta(ge=0)] = 3600.0
    advice: Annotated[float, Meta(ge=0)] = 300.0
    capacity: Annotated[float, Meta(ge=0)] = 30.0


class EstimateSettings(_Frozen, frozen=True):
    """How preparation is estimated from history (``[estimates]``; docs/ARCHITECTURE.md §10).

    window: recent samples kept per key (Redis and memory alike).
    min_samples: samples a key needs before its history (or fitted model) is trusted
    over the configured :class:`Preparation` defaults.
    quantile: the high quantile quoted as the pessimistic estimate; offers
    start no earlier than it allows.
    refresh: seconds a replica reuses what it read of the shared history.
    """

    window: Annotated[int, Meta(ge=2, le=1000)] = 50
    min_samples: Annotated[int, Meta(ge=1, le=1000)] = 5
    quantile: Annotated[float, Meta(ge=0.5, le=1.0)] = 0.9
    refresh: Annotated[float, Meta(ge=0)] = 10.0


class TimeLimits(_Frozen, frozen=True):
    """How long a worker of each role may take over one event, seconds
    (``[platforms.time_limits]``).

    The broker stamps every event it sends with ``deadline`` = now + its role's
    limit; a worker gives the event up at that instant (a handler still running
    is cancelled), dead-letters it and fails its components with the reason,
    so a hung handler cannot hold its message, or its session, for ever.
    """

    #: Seconds a worker of the role may take over one event (then it is dead-lettered).
    prepare_data: Annotated[float, Meta(gt=0)] = constants.TIME_LIMITS["prepare-data"]
    image_cache: Annotated[float, Meta(gt=0)] = constants.TIME_LIMITS["image-cache"]
    launch: Annotated[float, Meta(gt=0)] = constants.TIME_LIMITS["launch"]
    release: Annotated[float, Meta(gt=0)] = constants.TIME_LIMITS["release"]

    def of(self, role: Role) -> float:
        """The limit of ``role``."""
        limit: float = getattr(self, role.replace("-", "_"))
        return limit


class SkahaSettings(_Frozen, frozen=True):
    """How the ``skaha`` launcher reaches a CANFAR Skaha service (``[platforms.skaha]``).

    url: the service's base URL; ``/v1/...`` is appended.
    token_file: bearer token of the Skaha account the broker launches as
    (re-read when the file changes).
    poll_interval: seconds between two looks at all of the account's sessions.
    notebook_image: the image jupyter-notebook executables run in.
    pending_margin: seconds a session may stay Pending beyond its preparing window.
    max_sessions: sessions Skaha lets the account run at once; offers respect it.
    callbacks: take Skaha's callbacks instead of polling when it offers them.
    callback_listen, callback_url: where the launcher listens for those
    callbacks (``host:port``) and the URL Skaha is given for them.
    """

    url: str
    token_file: str | None = None
    poll_interval: Annotated[float, Meta(gt=0)] = 10.0
    notebook_image: str | None = None
    pending_margin: Annotated[float, Meta(ge=0)] = 300.0
    max_sessions: PositiveInt = 3
    callbacks: bool = True
    callback_listen: str | None = None
    callback_url: str | None = None
    #: Seconds the broker trusts Skaha's catalogue of images and legal sizes.
    catalogue_ttl: Annotated[float, Meta(gt=0)] = 300.0


class SrcnetSettings(_Frozen, frozen=True):
    """How the ``srcnet`` stager reaches SRCNet data management (``[platforms.srcnet]``).

    url: the data-management API's base URL; ``/v1/...`` is appended.
    token_file: bearer token (re-read when the file changes).
    storage_area: the storage area (RSE) the platform's sessions read from.
    site: the site of that storage area (a replica at the same site is preferred).
    mount_root: where the storage area appears inside the platform's sessions.
    poll_interval: seconds between two looks at the staging requests in flight.
    callbacks, callback_listen, callback_url: as for Skaha.
    """

    url: str
    storage_area: str
    token_file: str | None = None
    site: str | None = None
    mount_root: str = "/arc/data"
    poll_interval: Annotated[float, Meta(gt=0)] = 5.0
    callbacks: bool = True
    callback_listen: str | None = None
    callback_url: str | None = None


class HarborSettings(_Frozen, frozen=True):
    """How the ``harbor`` image cache reaches the site's Harbor (``[platforms.harbor]``).

    url: Harbor's base URL (``/api/v2.0`` and ``/v2`` are appended).
    proxy_project: the proxy-cache project that pulls images absent from the site.
    username, secret_file: a robot account (none: anonymous reads).
    pull_timeout: seconds a pull-through may take before the image fails.
    """

    url: str
    proxy_project: str
    username: str | None = None
    secret_file: str | None = None
    pull_timeout: Annotated[float, Meta(gt=0)] = 600.0
    #: Seconds between two looks at a pull-through in progress.
    poll: Annotated[float, Meta(gt=0)] = 2.0


class SlurmSettings(_Frozen, frozen=True):
    """How the ``slurm`` launcher uses a Slurm cluster (``[platforms.slurm]``).

    Slurm's own command line is used (``sbatch``, ``squeue``, ``sacct``,
    ``scancel``, ``scontrol``), as the user the launcher runs as, on a host
    that shares the platform's ``work_dir`` with the compute nodes.

    partition: the partition its jobs go to (none: Slurm's default).
    account: the rule that maps the requesting user to a Slurm account: a
    template where ``{principal}`` is the user and ``{platform}`` the
    platform's name (``"{principal}"``, ``"astro-{principal}"``) or a fixed
    account (``"talicada"``); none: the launching user's default account.
    accounts: principal → account, consulted before the rule.
    container_runtime: the command that runs a container image, with
    ``{image}`` for its location (``"apptainer run docker://{image}"``);
    none: the platform answers NO for containers.
    poll_interval: seconds between two looks at all its jobs (one ``squeue``,
    and one ``sacct`` when some ended).
    quote_ttl: seconds an ``sbatch --test-only`` quote is reused for the same
    size, duration and start.
    completion_log: read ended jobs from the job-completion log (``sacct -c``),
    for a Slurm without slurmdbd.
    bin_dir: where the Slurm commands are (none: the PATH).
    command_timeout: seconds one Slurm command may take.
    """

    partition: str | None = None
    account: str | None = None
    accounts: dict[str, str] = msgspec.field(default_factory=dict)
    container_runtime: str | None = None
    poll_interval: Annotated[float, Meta(gt=0)] = 10.0
    quote_ttl: Annotated[float, Meta(ge=0)] = 5.0
    completion_log: bool = False
    bin_dir: str | None = None
    command_timeout: Annotated[float, Meta(gt=0)] = 30.0

    def account_for(self, principal: str | None, platform: str) -> str | None:
        """The Slurm account of ``principal`` by the configured rule (None: Slurm's default).

        A rule naming ``{principal}`` when the principal is unknown gives None.
        """
        if principal is not None and principal in self.accounts:
            return self.accounts[principal]
        if self.account is None or ("{principal}" in self.account and principal is None):
            return None
        return self.account.format(principal=principal, platform=platform)


class PlatformSettings(_Frozen, frozen=True):
    """One execution platform the broker makes offers on.

    ``launcher``, ``stager`` and ``image_cache`` name the back end of each
    worker role (:mod:`talicada.workers.backends` lists them); a back end that
    talks to an outside service reads its own table (``[platforms.skaha]``,
    ``[platforms.slurm]``).
    ``cores`` and ``memory`` (GiB) are the platform's total capacity in the
    calendar; ``max_cores`` and ``max_memory`` bound one session. ``executables``
    and ``data`` list the kinds it supports; ``data_schemes`` the URL schemes
    its staging can fetch (for ``simple-data-resource``).
    """

    #: The platform's name (lower case, digits, ``-``, ``_``), used in offers and stream names.
    name: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    #: Back end that launches (and releases) executables: local, skaha, slurm.
    launcher: str = "local"
    #: Back end that allocates storage and stages data: local, srcnet.
    stager: str = "local"
    #: Back end that makes images available before launch: none, harbor.
    image_cache: str = "none"
    #: The Skaha service of the ``skaha`` launcher.
    skaha: SkahaSettings | None = None
    #: SRCNet data management for the ``srcnet`` stager.
    srcnet: SrcnetSettings | None = None
    #: The Harbor of the ``harbor`` image cache.
    harbor: HarborSettings | None = None
    #: The Slurm cluster of the ``slurm`` launcher.
    slurm: SlurmSettings | None = None
    #: Executable kinds it runs (short names, as in ``talicada/schema/kinds.py``).
    executables: list[str] = msgspec.field(default_factory=lambda: ["ping", "delay", "checksum"])
    #: Data kinds it stages.
    data: list[str] = msgspec.field(default_factory=lambda: ["simple-data-resource"])
    #: URL schemes its staging may fetch (simple-data-resource).
    data_schemes: list[str] = msgspec.field(default_factory=lambda: ["http", "https", "file"])
    #: Hosts its staging may fetch from; empty means any public host. An entry
    #: is ``host:port``, or ``host`` for the scheme's default port (80, 443).
    data_hosts: list[str] = msgspec.field(default_factory=list)
    #: Internal addresses its staging may fetch from despite the fence
    #: (talicada/security/fence.py): networks (``10.1.0.0/16``, any port) or
    #: ``host:port`` endpoints. Loopback, private, link-local, multicast and
    #: unspecified addresses are refused unless listed here.
    fetch_allow: list[str] = msgspec.field(default_factory=list)
    #: Cores in its calendar: the total all sessions share.
    cores: PositiveInt = 8
    #: Memory (GiB) in its calendar.
    memory: PositiveInt = 16
    #: Most cores of one session (none: the total).
    max_cores: PositiveInt | None = None
    #: Most memory (GiB) of one session (none: the total).
    max_memory: PositiveInt | None = None
    #: Most cores and GiB one owner's pending offers may hold here (each offer
    #: set counted once, by its largest offer). None: half the platform, but
    #: never less than one session's maximum (talicada/broker/fairness.py).
    max_held_cores: PositiveInt | None = None
    max_held_memory: PositiveInt | None = None
    #: Longest session (seconds) the platform books. A booking costs the change
    #: points it overlaps, not its length, so sites may book long sessions.
    max_duration: Annotated[float, Meta(gt=0)] = 30 * 24 * 3600.0
    #: Price per core-hour; when set the planner honours cost maxima.
    core_hour_price: Annotated[float, Meta(ge=0)] | None = None
    #: Configured preparation times (``[platforms.preparation]``).
    preparation: Preparation = msgspec.field(default_factory=Preparation)
    time_limits: TimeLimits = msgspec.field(default_factory=TimeLimits)

    def backend(self, role: Role) -> str:
        """The back end that does ``role``'s work on this platform."""
        if role == "prepare-data":
            return self.stager
        if role == "image-cache":
            return self.image_cache
        return self.launcher  # launch and release

    @property
    def session_cores(self) -> int:
        """Most cores one session may have."""
        return min(self.max_cores or self.cores, self.cores)

    @property
    def session_memory(self) -> int:
        """Most memory (GiB) one session may have."""
        return min(self.max_memory or self.memory, self.memory)


class OidcSettings(_Frozen, frozen=True):
    """One trusted OIDC issuer of access tokens (``[[oidc]]``), e.g. INDIGO IAM.

    issuer: the ``iss`` its tokens carry. audiences: ``aud`` values accepted
    (one must match). jwks_url (fetched, cached ``jwks_ttl`` seconds and
    refetched at most every ``jwks_refresh`` seconds when a token names an
    unknown key) or jwks_file: its signing keys. principal_claim: the claim
    that names the caller. groups_claim and roles: groups that grant roles
    (``{"srcnet/operators" = "operator"}``).
    """

    issuer: Annotated[str, Meta(min_length=1)]
    audiences: Annotated[list[str], Meta(min_length=1)]
    jwks_url: str | None = None
    jwks_file: str | None = None
    principal_claim: str = "sub"
    groups_claim: str = "groups"
    roles: dict[str, str] = msgspec.field(default_factory=dict)
    algorithms: list[str] = msgspec.field(default_factory=lambda: ["RS256", "ES256", "PS256"])
    leeway: Annotated[float, Meta(ge=0, le=300)] = 30.0
    jwks_ttl: Annotated[float, Meta(gt=0)] = 300.0
    jwks_refresh: Annotated[float, Meta(ge=0)] = 30.0


#: The platform of embedded mode: this machine, test tasks only, quick to prepare.
LOCAL = PlatformSettings(
    name="local",
    preparation=Preparation(
        image={},
        data={"simple-data-resource": 2.0},
        storage=1.0,
        launch=1.0,
        release=1.0,
    ),
)


class Settings(_Frozen, frozen=True):
    """Everything the broker reads at startup. Secrets are masked in ``repr``.

    host, port: where ``talicada serve`` listens (127.0.0.1:8082).
    base_url: public URL for ``href``s; default is derived from each request.
    redis_url: Redis for state, calendar and streams; None → embedded mode.
    key_prefix: first element of every Redis key.
    auth_tokens_file: file of ``token principal`` lines; None → auth off
    (allowed only in embedded mode, and logged loudly).
    max_offers, offer_ttl, default_duration, default_start_window, slot:
    the offer planner (seconds for durations).
    max_body_bytes: largest request body accepted.
    platforms: the execution platforms (default: one ``local``).
    remote_platforms: remote brokers this one aggregates (``[[platforms]]``
    tables with ``remote``; docs/ARCHITECTURE.md §12), and ``federation`` how.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8082
    base_url: str | None = None
    redis_url: str | None = None
    key_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "talicada"
    auth_tokens_file: str | None = None
    #: Trusted OIDC issuers of access tokens (with or without a token file).
    oidc: list[OidcSettings] = msgspec.field(default_factory=list)
    #: Who may read /metrics: anyone (what Prometheus expects) or operators only.
    metrics_access: Literal["open", "operator"] = "open"
    #: Serve /metrics on this port of ``host`` as well, open; /metrics on the
    #: main port then needs the operator role.
    metrics_port: Annotated[int, Meta(ge=1, le=65535)] | None = None
    max_offers: Annotated[int, Meta(ge=1, le=32)] = constants.MAX_OFFERS
    offer_ttl: Seconds = constants.OFFER_TTL.total_seconds()
    default_duration: Seconds = constants.DEFAULT_DURATION.total_seconds()
    default_start_window: Seconds = constants.DEFAULT_START_WINDOW.total_seconds()
    slot: Annotated[int, Meta(ge=1, le=3600)] = int(constants.CALENDAR_SLOT.total_seconds())
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 1 << 20
    #: JSON lines, console lines, or auto (console when stderr is a terminal).
    log_format: Literal["auto", "json", "console"] = "auto"
    #: Shared secret that signs worker callbacks; generated per process when
    #: embedded, required when workers run as separate processes.
    callback_secret: Annotated[str, Meta(min_length=16)] | None = None
    #: The secret before the last rotation, still accepted on callbacks until
    #: every worker signs with ``callback_secret``; then remove it.
    callback_secret_previous: Annotated[str, Meta(min_length=16)] | None = None
    #: Where workers send their callbacks (``talicada worker``); embedded
    #: workers use the broker's own address.
    broker_url: str | None = None
    #: MQTT broker for session notifications (``mqtt://host:port``); None = off.
    mqtt_url: str | None = None
    #: Password of the MQTT user named in ``mqtt_url`` (instead of one in the URL).
    mqtt_password_file: str | None = None
    #: First topic level of what the broker publishes (``<prefix>/sessions/<owner>/<uuid>``).
    mqtt_topic_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = (
        "talicada"
    )
    #: Seconds a session's final phase stays retained (None: as long as the
    #: broker keeps the session, 30 days), after which Mosquitto drops it.
    mqtt_final_retain: Annotated[float, Meta(ge=1)] | None = None
    #: Where the local platform keeps session files (staged data, output).
    work_dir: str = "var/work"
    #: Largest data item the local platform stages (bytes).
    staging_max_bytes: Annotated[int, Meta(ge=1)] = 10 * 2**30
    #: Directories ``file://`` data may be copied from (none: file:// refused).
    file_roots: list[str] = msgspec.field(default_factory=list)
    #: Events one worker process handles at once.
    worker_concurrency: Annotated[int, Meta(ge=1, le=256)] = 8
    #: A failed event is retried after retry_base·2^(n-1) seconds (capped at 60 s)…
    retry_base: Seconds = constants.RETRY_BASE.total_seconds()
    #: …and dead-lettered after this many deliveries (its component FAILED).
    max_deliveries: Annotated[int, Meta(ge=1, le=100)] = constants.MAX_DELIVERIES
    #: Seconds an event may sit with a silent worker before another takes it.
    reclaim_idle: Seconds = constants.RECLAIM_IDLE.total_seconds()
    #: Most Redis connections one process opens; more concurrent commands wait…
    redis_pool_size: Annotated[int, Meta(ge=4, le=10_000)] = 64
    #: …this many seconds for a free one, then the call answers 503.
    redis_pool_timeout: Seconds = 2.0
    #: Seconds to wait for Redis to accept a connection, and for a reply.
    redis_connect_timeout: Seconds = 2.0
    redis_socket_timeout: Annotated[float, Meta(ge=3)] = 10.0
    #: Seconds a connection may go without a complete request head: from when it
    #: opens or its last response ends until its next request's headers have all
    #: arrived. Closes idle keep-alive connections and slow-header (slowloris) ones.
    http_idle_timeout: Seconds = 15.0
    #: Seconds a client may take to send a request body once its headers arrived.
    http_body_timeout: Seconds = 30.0
    #: Whether staging may fetch from loopback addresses on every platform;
    #: None: only in embedded mode (one person's own machine), said at start-up.
    allow_loopback_fetch: bool | None = None
    #: Listen beyond loopback even with authentication off (embedded mode).
    allow_unauthenticated_listen: bool = False
    platforms: list[PlatformSettings] = msgspec.field(default_factory=lambda: [LOCAL])
    remote_platforms: list[RemotePlatform] = msgspec.field(default_factory=list)
    federation: FederationSettings = msgspec.field(default_factory=FederationSettings)
    #: How long NO answers stay valid (the ``ttl`` of an offer set, issue 13).
    answer_ttl: AnswerTtl = msgspec.field(default_factory=AnswerTtl)
    #: Estimating preparation from the history of finished steps (issue 13).
    estimates: EstimateSettings = msgspec.field(default_factory=EstimateSettings)

    @property
    def redis_pool(self) -> PoolOptions:
        """The Redis connection pool these settings ask for."""
        return PoolOptions(
            pool_size=self.redis_pool_size,
            pool_timeout=self.redis_pool_timeout,
            connect_timeout=self.redis_connect_timeout,
            socket_timeout=self.redis_socket_timeout,
        )

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: in-memory state, not durable."""
        return self.redis_url is None

    @property
    def loopback_fetch(self) -> bool:
        """Whether data URLs on loopback addresses may be fetched."""
        if self.allow_loopback_fetch is None:
            return self.embedded
        return self.allow_loopback_fetch

    def __repr__(self) -> str:
        redis = "****" if self.redis_url and "@" in self.redis_url else self.redis_url
        secret = "****" if self.callback_secret else None
        mqtt = "****" if self.mqtt_url and "@" in self.mqtt_url else self.mqtt_url
        return (
            f"Settings(host={self.host!r}, port={self.port}, redis_url={redis!r}, "
            f"callback_secret={secret!r}, mqtt_url={mqtt!r}, …)"
        )


# Environment variables and the setting each one sets.
_ENVIRONMENT = {
    "TALICADA_HOST": "host",
    "TALICADA_PORT": "port",
    "TALICADA_BASE_URL": "base_url",
    "TALICADA_REDIS_URL": "redis_url",
    "TALICADA_KEY_PREFIX": "key_prefix",
    "TALICADA_AUTH_TOKENS_FILE": "auth_tokens_file",
    "TALICADA_METRICS_ACCESS": "metrics_access",
    "TALICADA_METRICS_PORT": "metrics_port",
    "TALICADA_MAX_OFFERS": "max_offers",
    "TALICADA_OFFER_TTL": "offer_ttl",
    "TALICADA_LOG_FORMAT": "log_format",
    "TALICADA_CALLBACK_SECRET": "callback_secret",
    "TALICADA_CALLBACK_SECRET_PREVIOUS": "callback_secret_previous",
    "TALICADA_BROKER_URL": "broker_url",
    "TALICADA_MQTT_URL": "mqtt_url",
    "TALICADA_MQTT_PASSWORD_FILE": "mqtt_password_file",
    "TALICADA_MQTT_TOPIC_PREFIX": "mqtt_topic_prefix",
    "TALICADA_WORK_DIR": "work_dir",
    "TALICADA_WORKER_CONCURRENCY": "worker_concurrency",
    "TALICADA_RECLAIM_IDLE": "reclaim_idle",
    "TALICADA_RETRY_BASE": "retry_base",
    "TALICADA_MAX_DELIVERIES": "max_deliveries",
    "TALICADA_REDIS_POOL_SIZE": "redis_pool_size",
    "TALICADA_REDIS_POOL_TIMEOUT": "redis_pool_timeout",
    "TALICADA_REDIS_CONNECT_TIMEOUT": "redis_connect_timeout",
    "TALICADA_REDIS_SOCKET_TIMEOUT": "redis_socket_timeout",
    "TALICADA_HTTP_IDLE_TIMEOUT": "http_idle_timeout",
    "TALICADA_HTTP_BODY_TIMEOUT": "http_body_timeout",
    "TALICADA_ALLOW_LOOPBACK_FETCH": "allow_loopback_fetch",
    "TALICADA_ALLOW_UNAUTHENTICATED_LISTEN": "allow_unauthenticated_listen",
}


def load(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from defaults, the TOML file, the environment and ``overrides``."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = config_file or environ.get("TALICADA_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            values.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except OSError as error:
            raise SettingsError(f"config file {path}: {error.strerror}") from error
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"config file {path}: {error}") from error
    for variable, setting in _ENVIRONMENT.items():
        if variable in environ:
            values[setting] = environ[variable]
    values.update({key: value for key, value in overrides.items() if value is not None})
    _split_remote_platforms(values)
    try:
        # Environment values are strings; lax conversion turns "8082" into 8082.
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as error:
        raise SettingsError(f"invalid setting: {_setting_path(str(error))}") from error
    _check_platforms(settings)
    for index, issuer in enumerate(settings.oidc):
        if (issuer.jwks_url is None) == (issuer.jwks_file is None):
            raise SettingsError(
                f"invalid setting: oidc[{index}]: set exactly one of jwks_url and jwks_file"
            )
    return settings


def _split_remote_platforms(values: dict[str, Any]) -> None:
    """Move ``[[platforms]]`` tables with ``remote`` into ``remote_platforms``.

    Operators write a remote broker as one more platform; the code keeps it
    apart so that nothing that runs local platforms has to skip it.
    """
    tables = values.get("platforms")
    if not isinstance(tables, list):
        return
    remote = [t for t in tables if isinstance(t, dict) and "remote" in t]
    if remote:
        values["platforms"] = [t for t in tables if not (isinstance(t, dict) and "remote" in t)]
        values["remote_platforms"] = [*values.get("remote_platforms", []), *remote]


def _setting_path(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.port`"; lead with the name.
    if " - at `$." in message:
        reason, _, where = message.partition(" - at `$.")
        return f"{where.rstrip('`')}: {reason}"
    return message


def _check_platforms(settings: Settings) -> None:
    from talicada.schema.kinds import KINDS, Family

    names = [platform.name for platform in settings.platforms]
    names += [remote.name for remote in settings.remote_platforms]
    if not names:
        raise SettingsError("invalid setting: platforms: at least one platform is needed")
    if len(set(names)) != len(names):
        raise SettingsError("invalid setting: platforms: platform names must be unique")
    from talicada.security.fence import Fence, split_endpoint
    from talicada.workers.backends import problems

    for index, platform in enumerate(settings.platforms):
        try:
            Fence.of(platform.fetch_allow)
        except ValueError as error:
            raise SettingsError(
                f"invalid setting: platforms[{index}].fetch_allow: {error}"
            ) from None
        for host in platform.data_hosts:
            if ":" in host and not host.startswith("[") and split_endpoint(host) is None:
                raise SettingsError(
                    f"invalid setting: platforms[{index}].data_hosts: {host!r} is not host:port"
                )
        for problem in problems(platform):
            raise SettingsError(f"invalid setting: platforms[{index}] ({platform.name}): {problem}")
        for field, family in (("executables", Family.EXECUTABLE), ("data", Family.DATA)):
            for kind in getattr(platform, field):
                if kind not in KINDS[family]:
                    raise SettingsError(
                        f"invalid setting: platforms[{index}].{field}: unknown kind {kind!r}; "
                        f"known: {', '.join(KINDS[family])}"
                    )
