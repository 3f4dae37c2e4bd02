"""What workers tell the broker: one component reached a phase.

Sent as the body of ``POST /callbacks/{session}``. ``delivery`` identifies the
report: workers derive it from the event and what they report, so a
redelivered event produces the same ids and the broker applies each once.
Schema-evolution rules apply (new fields get defaults).
"""

from __future__ import annotations

import msgspec

from talicada.schema.model import ComponentPhase, Connector


class Report(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A worker's report about one component of a session."""

    delivery: str
    event: str
    attempt: int = 1
    component: str
    phase: ComponentPhase
    message: str | None = None
    #: Bytes done and expected while staging (progress only; phase unchanged).
    progress: dict[str, int] | None = None
    #: Checksums the executable computed: path → SHA-256 hex.
    digests: dict[str, str] | None = None
    #: Tails of the executable's stdout and stderr.
    output: dict[str, str] | None = None
    connectors: list[Connector] | None = None
    #: The back end that reports, and the outside service's name for the
    #: component (a Skaha session id, a staging job id): kept per component so
    #: any worker can follow, extend or release it from the record alone.
    backend: str | None = None
    handle: str | None = None
    #: What the component produced there (a staged path, an image digest); merged
    #: into what earlier reports said.
    outputs: dict[str, str] | None = None
    #: Platform logs besides stdout/stderr (Skaha's scheduling events), by source.
    logs: dict[str, str] | None = None
    #: When the outside service says the phase was reached (ISO 8601 instant;
    #: a batch job's real start or end): the broker dates the transition then,
    #: not when the report arrived. None: now.
    at: str | None = None
    #: The executable's exit status, when it ended and its platform says.
    exit_code: int | None = None


decoder = msgspec.json.Decoder(Report)
encoder = msgspec.json.Encoder()
