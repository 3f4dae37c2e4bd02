"""The dashboard in real headless Chromium (Debian's), driven by Playwright.

Screenshots land in /tmp/talicada-ui-*.png for people to look at.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from talicada.broker.store import Store
from talicada.broker.store.memory import MemoryStore
from talicada.client import AsyncClient
from tests.conftest import BrokerFactory
from tests.lifecycle_support import task

#: Debian's Chromium; Playwright must never download a browser of its own.
CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get update && apt-get install -y chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path("/tmp")
WAIT_MS = 15_000


def chromium(path: Path = CHROMIUM) -> Path:
    """The browser to drive; fails the test, saying how to install it, when absent."""
    if not path.exists():
        pytest.fail(f"Chromium is missing at {path}; install it with: {INSTALL}", pytrace=False)
    return path


@pytest.fixture
def store() -> Store:
    """The memory store only: these tests are about the pages, not the stores."""
    return MemoryStore()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium for one test."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium()), args=FLAGS, headless=True
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture
async def site(start_broker: BrokerFactory) -> AsyncIterator[tuple[str, AsyncClient]]:
    """A broker with its workers (auth off, as embedded), its URL and a client of it."""
    url = str((await start_broker()).make_url("")).rstrip("/")
    async with AsyncClient(url) as client:
        yield url, client


async def new_page(browser: Browser) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    return page


async def test_the_front_door_leads_to_a_list_whose_phases_move_live(
    browser: Browser, site: tuple[str, AsyncClient]
) -> None:
    url, client = site
    _, session = await client.run(task("delay", duration="PT2S"))
    uuid = session.meta.uuid or ""
    page = await new_page(browser)
    await page.goto(url + "/")
    assert page.url == url + "/ui/"
    row = page.locator(f"tr[data-uuid='{uuid}']")
    await expect(row).to_be_visible()
    assert await row.locator("[data-role=phase]").inner_text() != "COMPLETED"
    await page.screenshot(path=str(SHOTS / "talicada-ui-sessions.png"), full_page=True)
    # the same row, no reload by the test: the page follows the broker
    await expect(row.locator("[data-role=phase]")).to_have_text("COMPLETED")
    rejected = page.locator("tr[data-uuid] [data-role=phase]", has_text="REJECTED")
    assert await rejected.count() == 3


async def test_a_session_s_timeline_moves_through_its_phases_live(
    browser: Browser, site: tuple[str, AsyncClient]
) -> None:
    url, client = site
    offers = await client.request_offers(task("delay", duration="PT3S"))
    uuid = offers.offers[0].meta.uuid or ""
    page = await new_page(browser)
    await page.goto(f"{url}/ui/sessions/{uuid}")
    await expect(page.locator("#phase")).to_have_text("OFFERED")
    timeline = page.locator("#timeline")
    assert await timeline.get_attribute("data-session-phases") == "OFFERED"
    await client.accept(uuid)
    seen: list[str] = []
    # Generous: on a loaded machine the page's SSE may lag the accept by seconds.
    deadline = time.monotonic() + 45
    while "COMPLETED" not in seen and time.monotonic() < deadline:
        phase = await page.locator("#phase").inner_text()
        if phase not in seen:
            seen.append(phase)
            if phase == "RUNNING":
                await page.screenshot(
                    path=str(SHOTS / "talicada-ui-session-running.png"), full_page=True
                )
        await asyncio.sleep(0.1)
    # The page may still show OFFERED until the accept's event reaches it.
    order = ["OFFERED", "ACCEPTED", "PREPARING", "RUNNING", "RELEASING", "COMPLETED"]
    assert seen == sorted(seen, key=order.index)  # forwards only, as they happened
    assert "RUNNING" in seen
    assert seen[-1] == "COMPLETED"
    phases = (await timeline.get_attribute("data-session-phases") or "").split()
    assert phases[-5:] == ["ACCEPTED", "PREPARING", "RUNNING", "RELEASING", "COMPLETED"]
    # one row per component, with bars drawn from its transitions
    executable = timeline.locator(".tl-component", has_text="executable")
    assert await executable.locator(".tl-bar[data-phase=RUNNING]").count() == 1
    # the page reloads itself once the session ended, for the final messages and logs
    await expect(page.locator("dl.facts[data-final=yes]")).to_have_count(1)
    assert await page.locator(".actions button").count() == 0
    await page.screenshot(path=str(SHOTS / "talicada-ui-session-done.png"), full_page=True)


async def test_an_offer_is_accepted_with_a_click(
    browser: Browser, site: tuple[str, AsyncClient]
) -> None:
    url, client = site
    offers = await client.request_offers(task("delay", duration="PT1S"))
    chosen = offers.offers[1].meta.uuid or ""
    page = await new_page(browser)
    await page.goto(f"{url}/ui/offersets/{offers.meta.uuid}")
    cards = page.locator("article.offer")
    await expect(cards).to_have_count(4)
    await expect(cards.first).to_contain_text("local")
    await page.screenshot(path=str(SHOTS / "talicada-ui-offers.png"), full_page=True)
    await page.locator(f"article[data-uuid='{chosen}'] button[data-action=ACCEPTED]").click()
    await page.wait_for_url(f"{url}/ui/sessions/{chosen}")
    assert (await client.get(chosen)).phase != "OFFERED"
    phases = sorted(offer.phase for offer in (await client.offerset(offers.meta.uuid or "")).offers)
    assert phases.count("REJECTED") == 3
    # accepting again is refused, and the page shows the broker's reason
    await page.goto(f"{url}/ui/sessions/{offers.offers[0].meta.uuid}")
    assert await page.locator("button[data-action=ACCEPTED]").count() == 0


async def test_a_request_is_submitted_from_the_page(
    browser: Browser, site: tuple[str, AsyncClient]
) -> None:
    url, client = site
    page = await new_page(browser)
    await page.goto(f"{url}/ui/submit")
    # a broken request first: the broker's message appears on the page
    await page.locator("#request").fill("executable:\n  kind: urn:nothing\n")
    await page.get_by_role("button", name="Ask for offers").click()
    await expect(page.locator("#banner")).to_contain_text("executable.kind")
    await page.screenshot(path=str(SHOTS / "talicada-ui-submit-refused.png"), full_page=True)
    await page.goto(f"{url}/ui/submit?example=ping")
    await page.get_by_role("button", name="Ask for offers").click()
    await page.wait_for_url(f"{url}/ui/offersets/*")
    await expect(page.locator("article.offer")).to_have_count(4)
    listed = await client.list_sessions(phases=["OFFERED"])
    assert len(listed.sessions) == 4


def test_a_missing_chromium_fails_saying_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failure:
        chromium(tmp_path / "no-chromium")
    assert INSTALL in str(failure.value)
