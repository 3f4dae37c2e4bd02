"""``launch`` and ``release`` / skaha: sessions on a CANFAR Skaha service.

Launch turns the executable into one Skaha session: a container becomes a
``headless`` session (its entrypoint, command and environment as ``cmd``,
``args`` and ``env``) unless Skaha's catalogue labels its image only for
notebooks or it asks for an access port, in which case it becomes a
``notebook`` session, as does a jupyter-notebook executable (in the
platform's ``notebook_image``). Creation is idempotent: the session's name is
made from the broker session's uuid and looked for before any retry, so
503, 503, 200 still makes one session. The Skaha session id is reported as
the executable's handle, so release and extension find it in the record.

Following is :class:`~talicada.workers.backends._skaha_account.Account`'s
job: one list call per interval for the whole account, or Skaha's callbacks.
Release unfollows the session first, then deletes it (a 404 is fine).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from talicada.broker.advice import Advice
from talicada.events.bus import Delivery
from talicada.events.envelope import Event, ExtendExecutable, Launch, Release
from talicada.schema import messages as msg
from talicada.schema.model import ComponentPhase, DockerContainer, JupyterNotebook, kind_of
from talicada.schema.validation import ValidRequest
from talicada.services._http import ServiceError, TokenFile
from talicada.services.skaha import SkahaClient, SkahaContext, session_type
from talicada.settings import PlatformSettings
from talicada.workers.backends._skaha_account import Account, Watch
from talicada.workers.runtime import Handler, WorkerContext

log = structlog.get_logger("talicada.worker.skaha")

#: Names of the sessions this broker makes start with this (Skaha keeps names short).
NAME_PREFIX = "tc-"


def skaha_name(session: str) -> str:
    """The Skaha session name for broker session ``session``: the same on every attempt."""
    return NAME_PREFIX + session.replace("-", "")[:12]


class Accounts:
    """One followed Skaha account per platform, made on first use."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self._accounts: dict[str, Account] = {}

    async def of(self, platform: PlatformSettings) -> Account:
        """The account of ``platform``, following its sessions from now on."""
        account = self._accounts.get(platform.name)
        if account is None:
            if platform.skaha is None:
                raise ValueError(f"platform {platform.name} has no [platforms.skaha] settings")
            # The account's own HTTP session, closed when its follower ends.
            http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
            token_file = platform.skaha.token_file
            token = TokenFile(Path(token_file)) if token_file else None
            client = SkahaClient(platform.skaha.url, token, http)
            account = Account(self.context, platform, client, on_stop=http.close)
            self._accounts[platform.name] = account
            await account.resume()
        return account

    async def resume_all(self) -> None:
        """Resume following on every platform this launcher serves (at start)."""
        for platform in self.context.settings.platforms:
            if platform.launcher == "skaha":
                await self.of(platform)


#: One set of accounts per worker context: launch and release share what they follow.
_ACCOUNTS: dict[int, Accounts] = {}


def _accounts(context: WorkerContext) -> Accounts:
    return _ACCOUNTS.setdefault(id(context.ledger), Accounts(context))


def launcher(context: WorkerContext) -> Handler:
    """The launch handler of the skaha back end."""
    accounts = _accounts(context)
    context.spawn(accounts.resume_all())

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        account = await accounts.of(context.platform(event))
        match event:
            case Launch(component=str(component)):
                await _launch(context, account, event, component)
            case ExtendExecutable(body=body):
                if body.handle is not None and body.handle.id:
                    await account.client.renew(body.handle.id)
                    log.info("skaha.renewed", session=event.session, skaha=body.handle.id)
            case _:
                raise ValueError(f"launch/skaha does not handle {event.type!r} events")

    return handle


async def _launch(context: WorkerContext, account: Account, event: Launch, component: str) -> None:
    reporter = context.reporter
    if await account.released(event.session):
        await reporter.report(
            event, component, "CANCELLED", message="released before it was launched"
        )
        return
    known = event.body.handles.get(component)
    if (known and known.id and known.backend == "skaha") or account.followed(event.session):
        return  # launched before (a redelivery): the account follows it already
    plan = _session_plan(account, event)
    if isinstance(plan, str):
        await reporter.report(event, component, "FAILED", message=plan)
        return
    image, notebook = plan
    try:
        types = {i.id: i.types for i in await account.client.images()}.get(image, [])
        kind = session_type(types, notebook=notebook)
        skaha_id = await _create(account, event, image, kind)
    except ServiceError as error:
        if error.transient:
            raise  # Skaha is busy: the event is retried later, still one session
        await reporter.report(event, component, "FAILED", message=f"Skaha refused: {error.reason}")
        return
    compute = event.body.compute.meta.uuid if event.body.compute.meta else None
    await account.watch(
        Watch(skaha_id=skaha_id, launch=event, notebook=kind == "notebook", compute=compute)
    )
    await reporter.report(
        event,
        component,
        "AVAILABLE",
        suffix=":launched",
        backend="skaha",
        handle=skaha_id,
        message=f"Skaha {kind} session {skaha_id} requested",
    )
    if await account.released(event.session):
        # Release began while we created it: it may have looked too early.
        await account.unwatch(skaha_id)
        await account.client.delete(skaha_id)


def _session_plan(account: Account, event: Launch) -> tuple[str, bool] | str:
    """(image, asks to be a notebook) for the executable, or why Skaha cannot run it."""
    executable = event.body.executable
    if isinstance(executable, DockerContainer):
        ports = executable.network.ports if executable.network else []
        return executable.image.locations[0], any(port.access for port in ports)
    if isinstance(executable, JupyterNotebook):
        if not account.settings.notebook_image:
            return "the platform has no notebook_image for jupyter-notebook executables"
        return account.settings.notebook_image, True
    return f"Skaha runs containers and notebooks, not {kind_of(executable)}"


async def _create(account: Account, event: Launch, image: str, kind: str) -> str:
    name = skaha_name(event.session)
    found = await account.client.find(name)  # a predecessor may have made it already
    if found is not None:
        return found.id
    body = event.body
    cores = (body.compute.cores.min if body.compute.cores else None) or 1
    ram = (body.compute.memory.min if body.compute.memory else None) or 1
    executable = body.executable
    cmd = args = env = None
    if kind == "headless" and isinstance(executable, DockerContainer):
        cmd = executable.entrypoint
        args = executable.command
        env = executable.environment
    return await account.client.create(
        name=name, image=image, type=kind, cores=cores, ram=ram, cmd=cmd, args=args, env=env
    )


def releaser(context: WorkerContext) -> Handler:
    """The release handler of the skaha back end: delete the session, report the components."""
    accounts = _accounts(context)

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, Release):
            raise ValueError(f"release/skaha does not handle {event.type!r} events")
        account = await accounts.of(context.platform(event))
        await account.mark_released(event.session)
        skaha_id = _handle_of(event)
        if skaha_id is None:
            watch = account.followed(event.session)
            found = None if watch else await account.client.find(skaha_name(event.session))
            skaha_id = watch.skaha_id if watch else (found.id if found else None)
        output: dict[str, str] = {}
        if skaha_id is not None:
            watch = await account.unwatch(skaha_id)
            if watch is not None and not watch.notebook:
                output, _ = await account.records(skaha_id, output=True)
            await account.client.delete(skaha_id)
            log.info("skaha.deleted", session=event.session, skaha=skaha_id)
        outcome: ComponentPhase = "COMPLETED" if event.body.normal else "CANCELLED"
        for component in event.body.components:
            await context.reporter.report(event, component, outcome, **_extra(output))

    return handle


def _handle_of(event: Event) -> str | None:
    assert isinstance(event, Release)
    for handle in event.body.handles.values():
        if handle.backend == "skaha" and handle.id:
            return handle.id
    return None


def _extra(output: dict[str, str]) -> dict[str, Any]:
    return {"output": output} if output.get("stdout") else {}


class Advisor:
    """Offer-time facts from Skaha: the images it runs, the sizes it accepts, the quota.

    Its catalogue (images, legal sizes) is kept for ``catalogue_ttl`` and the
    count of the account's live sessions for ``poll_interval``, so a burst of
    requests costs Skaha a few calls, not one per request.
    """

    def __init__(self, platform: PlatformSettings) -> None:
        assert platform.skaha is not None
        self.settings = platform.skaha
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        token_file = self.settings.token_file
        self.client = SkahaClient(
            self.settings.url,
            TokenFile(Path(token_file)) if token_file else None,
            self._http,
            attempts=2,
        )
        self._catalogue: tuple[float, dict[str, list[str]], SkahaContext] | None = None
        self._live: tuple[float, int] | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._http.close()

    async def advise(
        self, platform: PlatformSettings, valid: ValidRequest, owner: str | None = None
    ) -> Advice:
        """Why Skaha cannot run ``valid`` now, and the sizes it accepts (one account
        serves every owner)."""

        def refuse(reason: str) -> Advice:
            return Advice([msg.make(msg.PLATFORM_REFUSES, platform=platform.name, reason=reason)])

        try:
            images, context = await self._catalogue_now()
            live = await self._live_now()
        except ServiceError as error:
            return Advice(
                [msg.make(msg.PLATFORM_UNAVAILABLE, platform=platform.name, reason=str(error))]
            )
        executable = valid.request.executable
        if isinstance(executable, DockerContainer):
            image = executable.image.locations[0]
            ports = executable.network.ports if executable.network else []
            notebook = any(port.access for port in ports)
        elif isinstance(executable, JupyterNotebook) and self.settings.notebook_image:
            image, notebook = self.settings.notebook_image, True
        else:
            return refuse(f"Skaha runs containers and notebooks, not {kind_of(executable)}")
        if image not in images:
            return refuse(f"Skaha's catalogue has no image {image}")
        kind = session_type(images[image], notebook=notebook)
        if kind not in images[image]:
            return refuse(f"Skaha lists {image} for {', '.join(images[image])}, not {kind}")
        if live >= self.settings.max_sessions:
            return refuse(
                f"its Skaha account runs {live} sessions, its limit is {self.settings.max_sessions}"
            )
        return Advice(cores=tuple(context.cores), memory=tuple(context.ram))

    async def _catalogue_now(self) -> tuple[dict[str, list[str]], SkahaContext]:
        now = time.monotonic()
        if self._catalogue is None or now - self._catalogue[0] > self.settings.catalogue_ttl:
            images = {image.id: image.types for image in await self.client.images()}
            self._catalogue = (now, images, await self.client.context())
        return self._catalogue[1], self._catalogue[2]

    async def _live_now(self) -> int:
        now = time.monotonic()
        if self._live is None or now - self._live[0] > self.settings.poll_interval:
            sessions = await self.client.sessions()
            count = sum(1 for session in sessions if session.status in ("Pending", "Running"))
            self._live = (now, count)
        return self._live[1]
