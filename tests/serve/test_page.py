"""The web page in Debian's Chromium, driven by Playwright, against a real server on a loopback port."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from fashion_retrieval.embeddings import load_embeddings
from tests.helpers import ServedIndex

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]

pytestmark = pytest.mark.browser


def launch_chromium(playwright):
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it")
    # Playwright gives each launch a fresh, empty profile of its own.
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


@pytest.fixture(scope="module")
def server(embeddings_dir):
    served = ServedIndex("--embeddings", str(embeddings_dir))
    yield served.url
    served.close()


def test_page_text_image_and_hybrid_search(server, embeddings_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    meta = load_embeddings(embeddings_dir).metadata
    expected = httpx.post(
        f"{server}/api/search/text", json={"query": "a red dress", "top_k": 12, "filters": {"gender": ["WOMEN"]}}
    ).json()["results"]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/")
        expect(page.locator("#health")).to_contain_text("48 items")
        page.select_option("#filter-gender", "WOMEN")
        page.fill("#query", "a red dress")
        page.click("#search-button")
        cards = page.locator("#results .card")
        expect(cards).to_have_count(12)
        assert cards.evaluate_all("cs => cs.map(c => c.dataset.id)") == [r["id"] for r in expected]
        assert "%" in cards.first.locator(".score").inner_text()
        page.screenshot(path=str(ARTIFACTS / "page_text_search.png"), full_page=True)

        # image upload: thumbnail, then the slider appears because text is present too
        query_image = meta["path"][11]
        page.set_input_files("#image-input", query_image)
        expect(page.locator("#thumb-box")).to_be_visible()
        expect(page.locator("#alpha-box")).to_be_visible()
        page.locator("#alpha").fill("0")  # image only: the query image itself must come first
        expect(page.locator("#alpha-value")).to_have_text("0.00")
        page.click("#search-button")
        expect(cards.first).to_have_attribute("data-id", meta["id"][11])
        page.screenshot(path=str(ARTIFACTS / "page_hybrid_search.png"), full_page=True)

        # preview, history (newest at the bottom), removal
        cards.first.click()
        expect(page.locator("#preview")).to_be_visible()
        page.locator("#preview").click()
        history = page.locator("#history li")
        expect(history).to_have_count(2)
        assert "α=0.00" in history.nth(1).inner_text()
        history.nth(0).locator("button").click()
        expect(history).to_have_count(1)

        # an error message, not a blank page
        page.click("#clear-image")
        expect(page.locator("#alpha-box")).to_be_hidden()
        page.fill("#query", "")
        page.click("#search-button")
        expect(page.locator("#message")).to_contain_text("Type a description")

        # phone-sized screen
        page.set_viewport_size({"width": 390, "height": 844})
        page.fill("#query", "a hoodie")
        page.click("#search-button")
        expect(history).to_have_count(2)  # the search finished and was recorded
        expect(cards.first).to_be_visible()
        box = cards.first.bounding_box()
        assert box["width"] < 390
        page.screenshot(path=str(ARTIFACTS / "page_phone.png"), full_page=True)
        assert errors == []
        browser.close()
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
