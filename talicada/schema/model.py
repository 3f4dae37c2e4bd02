"""The execution-broker model as msgspec Structs: this *is* the schema.

The structs describe the canonical, dialect-free form: discriminator ``kind``
holding a short kind name (``docker-container``), identity in ``meta``. The
dialect layer (:mod:`talicada.schema.dialects`) translates the three wire
spellings to and from this form, so nothing else ever sees a kind URI.

Everything here is stored and streamed, so msgspec's schema-evolution rules
apply: new fields get defaults, existing fields are never retyped.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from talicada.schema.messages import MessageItem

# -- scalars ---------------------------------------------------------------

Name = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=4096)]
Url = Annotated[str, Meta(min_length=1, max_length=2048)]
Count = Annotated[int, Meta(ge=1, le=1_000_000)]
Bytes = Annotated[int, Meta(ge=0)]
#: An ISO 8601 duration such as ``PT10M``; parsed strictly by validation.
Duration = Annotated[str, Meta(max_length=64, examples=["PT10M"])]
#: An ISO 8601 instant such as ``2025-11-06T11:09:50Z``.
Instant = Annotated[str, Meta(max_length=64, examples=["2025-11-06T11:09:50Z"])]
#: An ISO 8601 interval: ``start/end``, ``start/duration`` or ``duration/end``.
Interval = Annotated[str, Meta(max_length=130, examples=["2025-11-06T11:00:00Z/PT1H"])]

SessionPhase = Literal[
    "INITIAL",
    "OFFERED",
    "ACCEPTED",
    "REJECTED",
    "EXPIRED",
    "WAITING",
    "PREPARING",
    "AVAILABLE",
    "RUNNING",
    "RELEASING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
]
ComponentPhase = Literal[
    "INITIALIZING",
    "WAITING",
    "PREPARING",
    "AVAILABLE",
    "RUNNING",
    "RELEASING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
]


class Base(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Every model struct: unknown fields are refused, defaults left out of output."""


class Option(Base, kw_only=True):
    """An update the client may send now (schema ``AbstractOption``).

    ``kind`` names the update it allows (``uri:enum-value-option`` for
    ``uri:enum-value-update``): ``values`` for an enumeration, ``min``/``max``
    in ``units`` for an integer delta. The broker writes options; clients never send them.
    """

    kind: Literal["uri:enum-value-option", "uri:integer-delta-option"]
    path: Annotated[str, Meta(max_length=256)]
    values: list[str] | None = None
    min: int | None = None
    max: int | None = None
    units: Annotated[str, Meta(max_length=16)] | None = None


class Metadata(Base, kw_only=True):
    """Identity, messages and options of a component (schema ``ComponentMetadata``)."""

    uuid: str | None = None
    name: Name | None = None
    url: Url | None = None
    description: Text | None = None
    created: Instant | None = None
    modified: Instant | None = None
    messages: Annotated[list[MessageItem], Meta(max_length=256)] = msgspec.field(
        default_factory=list
    )
    #: What the client may update now; written on answers, never stored.
    options: list[Option] | None = None


class MinMax(Base, kw_only=True):
    """A whole-number range; either end may be left for the broker to choose."""

    min: Count | None = None
    max: Count | None = None


class MinMaxFloat(Base, kw_only=True):
    """A real-number range (costs and metrics)."""

    min: float | None = None
    max: float | None = None


# -- costs and metrics -------------------------------------------------------


class SimpleMinMaxFloatCost(
    MinMaxFloat, tag_field="kind", tag="simple-minmax-float-cost", kw_only=True
):
    """A cost bound: clients send the most they accept, offers quote min and max."""

    type: Url | None = None
    description: Text | None = None


class SimpleMinMaxFloatMetric(
    MinMaxFloat, tag_field="kind", tag="simple-minmax-float-metric", kw_only=True
):
    """A metric bound: clients send what they need, offers quote what they get."""

    type: Url | None = None
    description: Text | None = None


Costs = Annotated[list[SimpleMinMaxFloatCost], Meta(max_length=32)]
Metrics = Annotated[list[SimpleMinMaxFloatMetric], Meta(max_length=32)]

# -- schedule ------------------------------------------------------------------


class StartDuration(Base, kw_only=True):
    """A schedule block: when a phase starts and how long it lasts."""

    start: Interval | None = None
    duration: Duration | None = None


class Schedule(Base, kw_only=True):
    """The requested schedule (client) and the planned one (offers and sessions)."""

    requested: StartDuration | None = None
    preparing: StartDuration | None = None
    available: StartDuration | None = None
    releasing: StartDuration | None = None


# -- components -----------------------------------------------------------------


class Component(Base, kw_only=True):
    """Fields every component shares."""

    meta: Metadata | None = None
    costs: Costs | None = None
    metrics: Metrics | None = None


class LifecycleComponent(Component, kw_only=True):
    """A component with a phase and a schedule of its own."""

    phase: ComponentPhase | None = None
    schedule: Schedule | None = None


class FailBlock(Base, kw_only=True):
    """Makes a test task fail at a predictable place (the seed's injected test codes)."""

    phase: Literal["PREPARING", "RUNNING", "RELEASING"]
    after: Duration = "PT0S"
    message: Text = "injected failure"


class Executable(LifecycleComponent, tag_field="kind", kw_only=True):
    """Something to run."""

    def injected_failure(self) -> FailBlock | None:
        """Where this executable was asked to fail on purpose (only test tasks can be)."""
        return None


class DockerPlatform(Base, kw_only=True):
    """The platform a container image is built for."""

    architecture: Annotated[str, Meta(max_length=32)] = "amd64"
    os: Annotated[str, Meta(max_length=32)] = "linux"


class DockerImage(Base, kw_only=True):
    """Where a container image lives and, optionally, its digest."""

    locations: Annotated[list[Url], Meta(min_length=1, max_length=16)]
    digest: Annotated[str, Meta(max_length=128)] | None = None
    platform: DockerPlatform | None = None


class DockerPort(Base, kw_only=True):
    """A container port published to the outside."""

    access: bool = False
    internal: dict[str, int] | None = None
    external: dict[str, int | list[str]] | None = None
    protocol: Annotated[str, Meta(max_length=16)] | None = None
    path: Url | None = None


class DockerNetwork(Base, kw_only=True):
    """Network access of a container."""

    ports: Annotated[list[DockerPort], Meta(max_length=64)] = msgspec.field(default_factory=list)


class DockerContainer(Executable, tag="docker-container", kw_only=True):
    """An OCI/Docker container."""

    image: DockerImage
    privileged: bool = False
    entrypoint: Text | None = None
    #: Arguments; numbers are accepted and kept as their text (YAML ``[10, 0]``).
    command: Annotated[list[Text], Meta(max_length=256)] | None = None
    environment: dict[Annotated[str, Meta(max_length=256)], Text] | None = None
    network: DockerNetwork | None = None


class SingularityContainer(Executable, tag="singularity-container", kw_only=True):
    """A Singularity/Apptainer container image."""

    location: Url


class JupyterNotebook(Executable, tag="jupyter-notebook", kw_only=True):
    """A Jupyter notebook."""

    location: Url


class TestTask(Executable, kw_only=True):
    """A test task for validation suites and the local platform.

    ``fail`` makes it fail at a predictable place (the seed's injected test codes).
    """

    fail: FailBlock | None = None

    def injected_failure(self) -> FailBlock | None:
        """The ``fail`` block, if any."""
        return self.fail


class Ping(TestTask, tag="ping", kw_only=True):
    """Test task that completes at once."""


class Delay(TestTask, tag="delay", kw_only=True):
    """Test task that runs for ``duration``."""

    duration: Duration = "PT10S"


class Checksum(TestTask, tag="checksum", kw_only=True):
    """Test task that hashes (SHA-256) every file under its mounted ``paths``."""

    paths: Annotated[list[Url], Meta(min_length=1, max_length=64)]


AnyExecutable = DockerContainer | SingularityContainer | JupyterNotebook | Ping | Delay | Checksum


class SimpleVolumeMount(Component, tag_field="kind", tag="simple-volume-mount", kw_only=True):
    """Mounts storage or data resources (by name or uuid) at ``path``.

    ``mode`` left out means READONLY; offers and sessions always write it.
    ``resource`` (one name) and ``resources`` (names or uuids) are both accepted;
    answers keep the form the request used.
    """

    path: Url
    # None rather than READONLY so answers, which leave defaults out, still say it.
    mode: Literal["READONLY", "READWRITE"] | None = None
    cardinality: Literal["CONTAINER", "INSTANCE"] | None = None
    resources: Annotated[list[Name], Meta(max_length=64)] | None = None
    resource: Name | None = None


#: ``compute.volumes`` holds mounts inline or names of top-level ``volumes``.
VolumeEntry = SimpleVolumeMount | Name


class SimpleComputeResource(
    LifecycleComponent, tag_field="kind", tag="simple-compute-resource", kw_only=True
):
    """Cores and memory (GiB), each as a min/max range, plus volume mounts."""

    cores: MinMax | None = None
    memory: MinMax | None = None
    volumes: Annotated[list[VolumeEntry], Meta(max_length=64)] | None = None


class SimpleStorageResource(
    LifecycleComponent, tag_field="kind", tag="simple-storage-resource", kw_only=True
):
    """Storage space (GiB) holding the listed data resources."""

    size: MinMax | None = None
    data: Annotated[list[Name], Meta(max_length=256)] | None = None


class DataResource(LifecycleComponent, tag_field="kind", kw_only=True):
    """Data the executable needs, staged into ``storage`` (by name or uuid)."""

    storage: Name | None = None


class SimpleDataResource(DataResource, tag="simple-data-resource", kw_only=True):
    """A file fetched from a URL."""

    location: Url
    size: Bytes | None = None
    checksum: Annotated[str, Meta(max_length=200)] | None = None


class S3DataResource(DataResource, tag="S3-data-resource", kw_only=True):
    """An object (or whole bucket) in an S3 store."""

    endpoint: Url | None = None
    template: Url | None = None
    bucket: Name
    object: Url | None = None


class RucioBlock(Base, kw_only=True):
    """Where a Rucio data object is."""

    endpoint: Url | None = None
    scope: Name
    object: Url
    type: Literal["FILE", "CONTAINER", "DATASET"] | None = None


class RucioDataResource(DataResource, tag="rucio-data-resource", kw_only=True):
    """A data object in a Rucio system."""

    rucio: RucioBlock


class ObsCore(Base, kw_only=True):
    """One ObsCore row describing the data."""

    obs_id: Text | None = None
    obs_collection: Text | None = None
    obs_publisher_did: Text | None = None
    obs_creator_did: Text | None = None
    dataproduct_type: Text | None = None
    calib_level: int | None = None
    access_url: Url | None = None
    access_format: Text | None = None


class DataLink(Base, kw_only=True):
    """One DataLink row describing the data."""

    ID: Text | None = None
    access_url: Url | None = None
    service_def: Text | None = None
    error_message: Text | None = None
    description: Text | None = None
    semantics: Text | None = None
    content_type: Text | None = None
    content_length: int | None = None
    content_qualifier: Text | None = None
    local_semantics: Text | None = None
    link_auth: Text | None = None
    link_authorized: Text | None = None


class IvoaBlock(Base, kw_only=True):
    """IVOA identity of the data."""

    ivoid: Url | None = None
    obscore: ObsCore | None = None
    datalink: DataLink | None = None


class IvoaDataResource(DataResource, tag="ivoa-data-resource", kw_only=True):
    """A data set known by IVOA identifier, ObsCore or DataLink."""

    ivoa: IvoaBlock


class SkaoChecksum(Base, kw_only=True):
    """Checksum of an SKAO data object."""

    type: Annotated[str, Meta(max_length=32)]
    value: Annotated[str, Meta(max_length=200)]


class SkaoReplica(Base, kw_only=True):
    """Where one replica of an SKAO data object lives."""

    rsename: Name
    dataurl: Url | None = None


class SkaoBlock(Base, kw_only=True):
    """An object in the SRCNet data lake."""

    namespace: Name
    objectname: Name
    objecttype: Literal["FILE", "CONTAINER", "DATASET"] | None = None
    datasize: Bytes | None = None
    checksum: SkaoChecksum | None = None
    replicas: Annotated[list[SkaoReplica], Meta(max_length=64)] | None = None


class SkaoDataResource(DataResource, tag="skao-data-resource", kw_only=True):
    """An object in the SKA Regional Centre Network data lake."""

    skao: SkaoBlock
    ivoa: IvoaBlock | None = None


AnyData = (
    SimpleDataResource | S3DataResource | RucioDataResource | IvoaDataResource | SkaoDataResource
)

# -- requests, offers, sessions --------------------------------------------------


class ExecutionRequest(Base, kw_only=True):
    """What a client asks for: an executable and the resources it needs, and when."""

    meta: Metadata | None = None
    executable: AnyExecutable
    compute: SimpleComputeResource | None = None
    storage: Annotated[list[SimpleStorageResource], Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )
    data: Annotated[list[AnyData], Meta(max_length=256)] = msgspec.field(default_factory=list)
    volumes: Annotated[list[SimpleVolumeMount], Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )
    schedule: Schedule | None = None
    costs: Costs | None = None
    metrics: Metrics | None = None


class Connector(Base, kw_only=True):
    """How to reach a running interactive session."""

    kind: Url
    protocol: Annotated[str, Meta(max_length=16)]
    location: Url
    status: Literal["PREPARING", "AVAILABLE", "FINISHED"] = "PREPARING"


class ExecutionSession(Base, kw_only=True):
    """An offer, and once accepted the session it becomes."""

    meta: Metadata
    phase: SessionPhase
    expires: Instant | None = None
    schedule: Schedule | None = None
    executable: AnyExecutable
    compute: SimpleComputeResource
    storage: list[SimpleStorageResource] = msgspec.field(default_factory=list)
    data: list[AnyData] = msgspec.field(default_factory=list)
    connectors: list[Connector] = msgspec.field(default_factory=list)
    costs: Costs | None = None
    metrics: Metrics | None = None
    #: When preparation actually began and when the session reached a final
    #: phase (UWS ``startTime``/``endTime``, TES ``start_time``/``end_time``);
    #: the broker writes them, the schedule keeps what was planned.
    start_time: Instant | None = None
    end_time: Instant | None = None
    #: The executable's exit status, when its platform reports one (TES ``exit_code``).
    exit_code: int | None = None


class OfferSet(Base, kw_only=True):
    """The answer to a request: YES with offers, or NO with messages saying why."""

    meta: Metadata
    result: Literal["YES", "NO"]
    expires: Instant | None = None
    #: How long this answer stays valid, YES or NO (also ``Cache-Control: max-age``):
    #: until the offers expire, or as long as the same request would get the same NO.
    ttl: Duration | None = None
    offers: list[ExecutionSession] = msgspec.field(default_factory=list)


# -- updates ------------------------------------------------------------------------


class EnumValueUpdate(Base, tag_field="kind", tag="uri:enum-value-update", kw_only=True):
    """Set an enumerated value, e.g. ``phase`` to ACCEPTED."""

    path: Annotated[str, Meta(max_length=256)]
    value: Annotated[str, Meta(max_length=256)]


class StringValueUpdate(Base, tag_field="kind", tag="uri:string-value-update", kw_only=True):
    """Set a string value, e.g. ``schedule.available.duration`` to PT2H."""

    path: Annotated[str, Meta(max_length=256)]
    value: Annotated[str, Meta(max_length=256)]


class IntegerValueUpdate(Base, tag_field="kind", tag="uri:integer-value-update", kw_only=True):
    """Set an integer value in ``units``."""

    path: Annotated[str, Meta(max_length=256)]
    value: int
    units: Annotated[str, Meta(max_length=16)] | None = None


class IntegerDeltaUpdate(Base, tag_field="kind", tag="uri:integer-delta-update", kw_only=True):
    """Add ``delta`` (in ``units``, seconds by default) to an integer-like value."""

    path: Annotated[str, Meta(max_length=256)]
    delta: int
    units: Annotated[str, Meta(max_length=16)] | None = None


AnyUpdate = EnumValueUpdate | StringValueUpdate | IntegerValueUpdate | IntegerDeltaUpdate


def kind_of(item: msgspec.Struct) -> str:
    """The internal kind name of a tagged struct (``docker-container``)."""
    return str(item.__struct_config__.tag)
