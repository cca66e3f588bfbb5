"""The inbox in a real browser: Debian's Chromium driven by Playwright (never a browser download).
alice signs in, sees the `legal` gate of a contract review with what it shows, approves it and
watches the run complete live; bob is refused on the purchasing committee's gate, which is not his.
Screenshots go to the test's tmp dir. Without Chromium this test FAILS (CI installs it: .ci/run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ensemble.service.auth import local_token
from tests.service.conftest import CONTRACT, PROCUREMENT, Service, park

CHROMIUM = os.environ.get("ENSEMBLE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def test_alice_approves_in_the_inbox_and_bob_is_refused(service: Service, tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`, as .ci/run does)"
        )
    from playwright.async_api import async_playwright, expect

    contract = await park(service, "contract_review", {"text": CONTRACT})
    purchase = await park(service, "procurement", PROCUREMENT)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            alice = await (await browser.new_context()).new_page()
            await alice.goto(f"{service.url}/inbox")
            await alice.fill("#token", local_token("alice"))
            await alice.click("#signin button")
            await expect(alice.locator("#who")).to_have_text("Signed in as alice")
            card = alice.locator(f'article.gate[data-run="{contract}"]')
            await expect(card.locator("pre.show")).not_to_be_empty(timeout=30_000)
            await expect(card.locator("ul.steps li").first).to_be_visible()
            await card.locator("textarea").fill("clauses acceptable")
            await card.locator("button.approve").click()
            await expect(card.locator("p.result")).to_contain_text("Recorded: approve", timeout=30_000)
            await expect(card.locator("p.run-state")).to_have_text("Run completed", timeout=60_000)
            await alice.screenshot(path=str(tmp_path / "alice-inbox.png"), full_page=True)

            await alice.goto(f"{service.url}/ui/runs/{contract}")  # the run page: steps, timeline, verified decision
            await expect(alice.locator("#decisions tbody td.ok")).to_contain_text("verified", timeout=30_000)
            await expect(alice.locator("#timeline svg")).to_be_visible()
            assert (await alice.locator("#steps tbody tr").count()) > 3
            assert "/workflows/" + contract in (await alice.locator("#temporal-link").get_attribute("href") or "")
            await alice.screenshot(path=str(tmp_path / "alice-run.png"), full_page=True)

            bob = await (await browser.new_context()).new_page()
            await bob.goto(f"{service.url}/ui/runs/{purchase}?gate=committee")
            await bob.fill("#token", local_token("bob"))
            await bob.click("#signin button")
            await bob.locator("#gate button.approve").click(timeout=30_000)
            await expect(bob.locator("#gate p.result")).to_contain_text(
                "Refused: 'bob' is not an approver", timeout=30_000
            )
            await bob.screenshot(path=str(tmp_path / "bob-refused.png"), full_page=True)
        finally:
            await browser.close()
    view = await service.client.status(purchase)
    assert view.status == "waiting_for_approval" and not view.pending_approvals[0]["approved_by"]
    assert (tmp_path / "alice-inbox.png").stat().st_size > 0 and (tmp_path / "bob-refused.png").stat().st_size > 0
    print(f"\nscreenshots: {tmp_path}")
