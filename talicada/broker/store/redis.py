"""The Redis store: production state, shared by any number of broker replicas.

Every operation that changes state is one Lua script (``lua/``), so checks and
changes happen together: two replicas can never both grant the last free
cores, nor accept two offers of one set. Reads are single commands or one
pipeline. Key names come from :class:`talicada.constants.Keys`.

The scripts that change a session also touch its platform's calendar, whose
keys carry a different hash tag; they need a Redis where all keys are on one
node (standalone or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping, Sequence
from importlib import resources
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.commands.core import AsyncScript

from talicada import constants
from talicada.broker.calendar import Entry, Usage
from talicada.broker.engine import Change, lifecycle_event
from talicada.broker.records import (
    LiveSession,
    OfferSetRecord,
    Outcome,
    SessionRecord,
    Transition,
)
from talicada.broker.store import EVERYONE, OVER_CAP, Held, held_shares
from talicada.broker.store.paging import Cursor
from talicada.events.bus import Bus
from talicada.events.envelope import ForgottenBody, SessionForgotten
from talicada.events.envelope import encode as encode_event
from talicada.events.redis_bus import RedisBus
from talicada.events.streams import LIFECYCLE
from talicada.redisconn import PoolOptions
from talicada.redisconn import client as redis_client
from talicada.schema.model import SessionPhase

log = structlog.get_logger("talicada.store")

_RETENTION_MS = int(constants.SESSION_RETENTION.total_seconds() * 1000)
_record_encoder = msgspec.msgpack.Encoder()
_session_decoder = msgspec.msgpack.Decoder(SessionRecord)
_offerset_decoder = msgspec.msgpack.Decoder(OfferSetRecord)
_transition_encoder = msgspec.json.Encoder()
_transition_decoder = msgspec.json.Decoder(Transition)
#: A compacted history: the JSON records as they were, kept raw until read.
_packed_history_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def _encode_record(record: SessionRecord, final: bool) -> bytes:
    """A session's stored form: msgpack, zlib-compressed once the session is final.

    A finished session is kept for the retention period and seldom read, and
    its record (messages with their templates, values and text, quotes,
    outputs) compresses to about half: with the compacted history this keeps
    a finished session under 4 KiB of Redis. A zlib stream starts with 0x78,
    which no msgpack map does, so :func:`_decode_session` reads either form.
    """
    packed = _record_encoder.encode(record)
    return zlib.compress(packed, 6) if final else packed


def _decode_session(doc: bytes) -> SessionRecord:
    return _session_decoder.decode(zlib.decompress(doc) if doc[:1] == b"x" else doc)


def _script(name: str) -> str:
    lua = resources.files("talicada.broker.store").joinpath("lua")
    common = lua.joinpath("common.lua").read_text(encoding="utf-8")
    common = common.replace("{{MAX_SPANNED}}", str(2 * constants.BOOKING_POINTS))
    return common + "\n" + lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _outcome(reply: list[bytes | str]) -> Outcome:
    parts = [_text(part) for part in reply]
    phase = cast(SessionPhase, parts[1]) if len(parts) > 1 else None
    return Outcome(parts[0], phase, parts[2] if len(parts) > 2 else None)


class RedisStore:
    """Sessions, offer sets, calendars and timers in Redis (see module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "talicada",
        maxlen: int = constants.STREAM_MAXLEN,
        reclaim_idle_ms: int = int(constants.RECLAIM_IDLE.total_seconds() * 1000),
    ) -> None:
        self.client = client
        self.keys = constants.Keys(prefix)
        self.maxlen = maxlen
        self.bus: Bus = RedisBus(
            client, prefix=prefix, maxlen=maxlen, reclaim_idle_ms=reclaim_idle_ms
        )
        self._commit = client.register_script(_script("commit"))
        self._hold = client.register_script(_script("hold"))
        self._accept = client.register_script(_script("accept"))
        self._finish = client.register_script(_script("finish"))
        self._claim = client.register_script(_script("claim_due"))
        self._usage = client.register_script(_script("usage"))
        self._rebuild = client.register_script(_script("rebuild"))
        self._compact = client.register_script(_script("compact_history"))
        self._forget = client.register_script(_script("forget"))

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = "talicada",
        pool: PoolOptions | None = None,
        **options: Any,
    ) -> RedisStore:
        """A store on the Redis at ``url``; fails fast when it does not answer.

        ``pool`` bounds the connection pool (:mod:`talicada.redisconn`).
        """
        client = redis_client(url, pool)
        await client.ping()
        store = cls(client, prefix=prefix, **options)
        # A deployment upgraded from the per-slot calendar keeps its bookings.
        await store.migrate_calendars()
        return store

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        return await script(keys=keys, args=args)

    async def usage(self, platform: str, first: int, last: int, most: int | None = None) -> Usage:
        # In pages of USAGE_PAGE points, each page one short script; a page
        # starts at the last point of the one before (its level is that point's).
        key = [self.keys.calendar_points(platform)]
        page = constants.USAGE_PAGE if most is None else min(most, constants.USAGE_PAGE)
        usage = Usage()
        start = first
        while True:
            numbers = [
                int(value) for value in await self._run(self._usage, key, [start, last, page])
            ]
            usage.extend(Usage(numbers[::3], numbers[1::3], numbers[2::3]))
            if len(numbers) // 3 - 1 < page or (most is not None and len(usage.points) > most):
                return usage
            start = numbers[-3]

    async def migrate_calendars(self) -> int:
        """Rebuild every calendar still kept as one counter per slot; how many there were."""
        migrated = 0
        pattern = f"{self.keys.prefix}:calendar:*:usage"
        async for raw in self.client.scan_iter(match=pattern, count=500):
            key = _text(raw)
            platform = key.split("{cal:", 1)[1].split("}", 1)[0]
            keys = [
                key,
                self.keys.calendar_points(platform),
                self.keys.calendar_entries(platform),
            ]
            counted = await self._run(self._rebuild, keys, [])
            log.info("calendar.migrated", platform=platform, entries=counted)
            migrated += 1
        return migrated

    async def hold(
        self,
        offerset: OfferSetRecord,
        offers: Sequence[SessionRecord],
        capacity: Mapping[str, tuple[int, int]],
        history: Sequence[Transition],
        owner_caps: Mapping[str, tuple[int, int]] | None = None,
    ) -> int | None:
        platforms = list(dict.fromkeys(offer.platform for offer in offers))
        keys = [self.keys.offerset(offerset.uuid), self.keys.timers()]
        args: list[Any] = [
            _record_encoder.encode(offerset),
            len(offers),
            len(platforms),
            _RETENTION_MS,
        ]
        for offer, first in zip(offers, history, strict=True):
            keys += [
                self.keys.session(offer.uuid),
                self.keys.history(offer.uuid),
                self.keys.owner_index(offer.owner),
            ]
            booking = offer.booking
            args += [
                offer.uuid,
                _record_encoder.encode(offer),
                platforms.index(offer.platform) + 1,
                booking.first,
                booking.last,
                booking.cores,
                booking.memory,
                offer.expires,
                offer.created,
                _transition_encoder.encode(first),
                encode_event(lifecycle_event(offer.uuid, first)),
                constants.timer("expire", offer.uuid),
            ]
        for platform in platforms:
            keys += [self.keys.calendar_points(platform), self.keys.calendar_entries(platform)]
        keys += [
            self.keys.stream(LIFECYCLE),
            self.keys.owner_held(offerset.owner),
            self.keys.owner_index(EVERYONE),
        ]
        for platform in platforms:
            args += list(capacity[platform])
        args += [self.maxlen, constants.STREAM_FIELD, offerset.expires, offerset.created]
        shares = held_shares(offers)
        for platform in platforms:
            cap = (owner_caps or {}).get(platform, (0, 0))
            args += [platform, *shares[platform], *cap]
        args.append(offerset.uuid)
        clash = int(await self._run(self._hold, keys, args))
        if clash < 0:
            return OVER_CAP
        return None if clash == 0 else clash - 1

    async def held(self, owner: str, now: int) -> Held:
        sums = await self.client.hgetall(self.keys.owner_held(owner))
        fields = {_text(name): int(value) for name, value in sums.items()}
        found: Held = {}
        for name, cores in fields.items():
            platform = name[2:]
            expires = fields.get(f"e:{platform}", 0)
            # Past the latest expiry nothing counted there is pending any more
            # (the next hold restarts those sums: common.lua, held_generation).
            if name.startswith("c:") and cores > 0 and expires > now:
                found[platform] = (cores, fields.get(f"m:{platform}", 0), expires)
        return found

    async def offerset(self, uuid: str) -> OfferSetRecord | None:
        doc = await self.client.hget(self.keys.offerset(uuid), "doc")
        return None if doc is None else _offerset_decoder.decode(cast(bytes, doc))

    async def sessions(self, uuids: Sequence[str]) -> list[LiveSession | None]:
        if not uuids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for uuid in uuids:
                pipe.hmget(self.keys.session(uuid), ["phase", "doc"])
            replies = await pipe.execute()
        found: list[LiveSession | None] = []
        for phase, doc in replies:
            if phase is None or doc is None:
                found.append(None)
            else:
                record = _decode_session(doc)
                found.append(LiveSession(record=record, phase=cast(SessionPhase, _text(phase))))
        return found

    async def _locate(self, uuid: str) -> SessionRecord | None:
        doc = await self.client.hget(self.keys.session(uuid), "doc")
        return None if doc is None else _decode_session(cast(bytes, doc))

    async def accept(self, uuid: str, now: int, record: Transition) -> Outcome:
        offer = await self._locate(uuid)
        if offer is None:
            return Outcome("missing")
        offerset = await self.offerset(offer.offerset)
        siblings = [s for s in (offerset.offers if offerset else []) if s != uuid]
        # Siblings may sit on other platforms; read where (one pipeline), to name their keys.
        sibling_records = [live.record if live else None for live in await self.sessions(siblings)]
        rejected = Transition(
            time=record.time,
            source="OFFERED",
            target="REJECTED",
            cause=f"sibling {uuid} accepted",
        )
        keys = [
            self.keys.session(uuid),
            self.keys.history(uuid),
            self.keys.offerset(offer.offerset),
            self.keys.timers(),
            self.keys.calendar_points(offer.platform),
            self.keys.calendar_entries(offer.platform),
            self.keys.stream(LIFECYCLE),
        ]
        args: list[Any] = [
            uuid,
            now,
            _transition_encoder.encode(record),
            _transition_encoder.encode(rejected),
            _RETENTION_MS,
            self.maxlen,
            constants.STREAM_FIELD,
            encode_event(lifecycle_event(uuid, record)),
            constants.timer("expire", uuid),
            constants.timer("start", uuid),
        ]
        for sibling, sibling_record in zip(siblings, sibling_records, strict=True):
            if sibling_record is None:
                continue
            keys += [
                self.keys.session(sibling),
                self.keys.history(sibling),
                self.keys.calendar_points(sibling_record.platform),
                self.keys.calendar_entries(sibling_record.platform),
            ]
            args += [
                sibling,
                encode_event(lifecycle_event(sibling, rejected)),
                constants.timer("expire", sibling),
            ]
        keys.append(self.keys.owner_held(offer.owner))
        return _outcome(await self._run(self._accept, keys, args))

    async def finish(
        self,
        uuid: str,
        sources: Collection[SessionPhase],
        record: Transition,
        *,
        due: int | None = None,
    ) -> Outcome:
        offer = await self._locate(uuid)
        if offer is None:
            return Outcome("missing")
        keys = [
            self.keys.session(uuid),
            self.keys.history(uuid),
            self.keys.timers(),
            self.keys.calendar_points(offer.platform),
            self.keys.calendar_entries(offer.platform),
            self.keys.stream(LIFECYCLE),
            self.keys.offerset(offer.offerset),
            self.keys.owner_held(offer.owner),
        ]
        args = [
            uuid,
            " ".join(sorted(sources)),
            record.target,
            _transition_encoder.encode(record),
            "" if due is None else due,
            _RETENTION_MS,
            self.maxlen,
            constants.STREAM_FIELD,
            encode_event(lifecycle_event(uuid, record)),
            constants.timer("expire", uuid),
        ]
        return _outcome(await self._run(self._finish, keys, args))

    async def forget(
        self, uuid: str, final: Collection[SessionPhase], *, owner: str | None = None
    ) -> Outcome:
        if owner is None:
            record = await self._locate(uuid)
            if record is None:
                return Outcome("missing")
            owner = record.owner
        keys = [
            self.keys.session(uuid),
            self.keys.history(uuid),
            self.keys.applied(uuid),
            self.keys.owner_index(owner),
            self.keys.owner_index(EVERYONE),
            self.keys.stream(LIFECYCLE),
        ]
        event = SessionForgotten.new(uuid, body=ForgottenBody(owner=owner))
        args = [uuid, " ".join(sorted(final)), self.maxlen, constants.STREAM_FIELD]
        return _outcome(await self._run(self._forget, keys, [*args, encode_event(event)]))

    async def load(self, uuid: str) -> tuple[LiveSession, int] | None:
        phase, doc, version = await self.client.hmget(
            self.keys.session(uuid), ["phase", "doc", "v"]
        )
        if phase is None or doc is None:
            return None
        record = _decode_session(cast(bytes, doc))
        live = LiveSession(record=record, phase=cast(SessionPhase, _text(phase)))
        return live, int(version or 0)

    async def commit(self, uuid: str, version: int, change: Change, delivery: str | None) -> str:
        keys = [
            self.keys.session(uuid),
            self.keys.history(uuid),
            self.keys.applied(uuid),
            self.keys.timers(),
            self.keys.calendar_points(change.record.platform),
            self.keys.calendar_entries(change.record.platform),
            self.keys.offerset(change.record.offerset),
            *(self.keys.stream(role) for role, _ in change.events),
        ]
        args: list[Any] = [
            version,
            change.phase,
            _encode_record(change.record, change.final),
            delivery or "",
            "1" if change.final else "0",
            _RETENTION_MS,
            self.maxlen,
            constants.STREAM_FIELD,
            uuid,
            *((change.rebook.last, *change.rebook.capacity) if change.rebook else ("", 0, 0)),
            len(change.history),
            *(_transition_encoder.encode(item) for item in change.history),
            len(change.add_timers),
        ]
        for name, due in change.add_timers.items():
            args += [name, due]
        args += [len(change.drop_timers), *change.drop_timers]
        args += [encode_event(event) for _, event in change.events]
        result = _text(await self._run(self._commit, keys, args))
        if result == "ok" and change.final:
            await self.compact_history(uuid)
        return result

    async def _history_parts(self, uuid: str) -> tuple[list[msgspec.Raw], list[bytes]]:
        """The compressed part of a session's history (records) and the list after it."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.session(uuid), "history")
            pipe.lrange(self.keys.history(uuid), 0, -1)
            packed, items = await pipe.execute()
        earlier = _packed_history_decoder.decode(zlib.decompress(packed)) if packed else []
        return earlier, items

    async def compact_history(self, uuid: str) -> bool:
        """Compress a finished session's history into its hash; False when it changed meanwhile."""
        earlier, items = await self._history_parts(uuid)
        if not items:
            return True
        packed = zlib.compress(b"[" + b",".join([*earlier, *items]) + b"]")
        keys = [self.keys.session(uuid), self.keys.history(uuid)]
        return bool(await self._run(self._compact, keys, [len(items), packed]))

    async def history(self, uuid: str, start: int = 0) -> list[Transition]:
        earlier, items = await self._history_parts(uuid)
        return [_transition_decoder.decode(item) for item in [*earlier, *items][start:]]

    async def claim_due(self, now: int, lease: int, limit: int) -> list[str]:
        names = await self._run(self._claim, [self.keys.timers()], [now, lease, limit])
        return [_text(name) for name in names]

    async def drop_timer(self, name: str) -> None:
        await self.client.zrem(self.keys.timers(), name)

    async def list_sessions(
        self,
        owner: str,
        *,
        phases: Collection[SessionPhase],
        since: int | None,
        until: int | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[LiveSession], str | None]:
        key = self.keys.owner_index(owner)
        after = Cursor.decode(cursor) if cursor else None
        high: int | str = "+inf" if until is None else until
        if after is not None:
            high = after.created if until is None else min(after.created, until)
        low: int | str = "-inf" if since is None else since
        found: list[LiveSession] = []
        offset, batch = 0, max(limit * 2, 20)
        # Where the next page starts: the last row looked at, matching or not.
        last: tuple[int, str] | None = None
        more = True  # whether rows may follow ``last``
        # Bounded: a page with a rare phase filter ends early, with a cursor.
        for _ in range(10):
            rows = cast(
                list[tuple[bytes, float]],
                await self.client.zrevrangebyscore(
                    key, high, low, start=offset, num=batch, withscores=True
                ),
            )
            offset += len(rows)
            candidates = [(int(score), _text(member)) for member, score in rows]
            if after is not None:
                candidates = [row for row in candidates if row < after.key]
            sessions = await self.sessions([uuid for _, uuid in candidates])
            gone = [
                uuid for (_, uuid), live in zip(candidates, sessions, strict=True) if live is None
            ]
            if gone:
                # Their keys expired after the retention period: drop them from
                # the index too (only here, where it is known that they are gone).
                await self.client.zrem(key, *gone)
                offset -= len(gone)  # the rows after them moved up
            more = len(rows) == batch
            for index, (row, live) in enumerate(zip(candidates, sessions, strict=True)):
                last = row
                if live is not None and (not phases or live.phase in phases):
                    found.append(live)
                    if len(found) == limit:
                        more = more or index < len(candidates) - 1
                        break
            if len(found) == limit or not more:
                break
        return found, Cursor(*last).encode() if more and last is not None else None

    async def entries(self, platform: str) -> list[tuple[str, str, Entry]]:
        # HSCAN, not HGETALL: a busy platform has tens of thousands of entries,
        # and one command returning them all would hold up every other client.
        # (HSCAN may return a field twice while the hash grows: keyed by uuid.)
        found: dict[str, str] = {}
        async for uuid, text in self.client.hscan_iter(
            self.keys.calendar_entries(platform), count=constants.USAGE_PAGE
        ):
            found[_text(uuid)] = _text(text)
        return [(uuid, *Entry.decode(platform, text)) for uuid, text in found.items()]

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except aioredis.RedisError:
            return False

    async def close(self) -> None:
        await self.client.aclose()
