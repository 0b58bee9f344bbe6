"""The web page in Debian's Chromium, driven by Playwright, against a real server on a loopback port."""

from __future__ import annotations

import json
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

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("page")]  # one worker starts the servers


def launch_chromium(playwright):
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the module: a launch (and Playwright's driver) costs more than many of these tests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


@pytest.fixture
def browser(chromium):
    """The module's Chromium. Each ``new_page`` opens a context of its own (fresh storage, cookies and cache, as a
    new profile would be); those a test opened are closed after it."""
    yield chromium
    for context in chromium.contexts:
        context.close()


@pytest.fixture(scope="module")
def server(plain_server):
    return plain_server.url


def test_page_text_image_and_hybrid_search(browser, server, embeddings_dir, tmp_path):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    meta = load_embeddings(embeddings_dir).metadata
    expected = httpx.post(
        f"{server}/api/search/text", json={"query": "a red dress", "top_k": 12, "filters": {"gender": ["WOMEN"]}}
    ).json()["results"]
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
    assert shutil.which("chromium") or Path(CHROMIUM).exists()


# -- composed and refined search ---------------------------------------------------------------------------------
TOP_K = 12
API_KEY = "s3cret-page-key"


# Records what the page sends to /api/search/* (Chromium does not report multipart bodies that hold a file).
RECORD_REQUESTS = """
(() => {
  const original = window.fetch;
  window.__sent = [];
  window.fetch = function (input, init) {
    const url = String(input && input.url ? input.url : input);
    if (url.includes("/api/search/")) {
      let fields = null;
      const body = init && init.body;
      if (body instanceof FormData) {
        fields = {};
        for (const [k, v] of body.entries()) {
          (fields[k] = fields[k] || []).push(v instanceof File ? { file: v.name, size: v.size } : v);
        }
      } else if (typeof body === "string") {
        fields = JSON.parse(body);
      }
      window.__sent.push({ url, fields });
    }
    return original.apply(this, arguments);
  };
})();
"""


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script(RECORD_REQUESTS)
    page.goto(url + "/")
    return page, errors


def shown_ids(page) -> list[str]:
    return page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.id)")


def shown_captions(page) -> list[str]:
    return page.locator("#results .card .caption").all_inner_texts()


def search_via(page, path: str, action) -> dict:
    """Run ``action`` (a click, a key press), wait for the page's request to ``path`` to be answered and the
    results drawn; return the fields the page sent (form fields as lists, or the JSON body)."""
    from playwright.sync_api import expect

    with page.expect_response(lambda r: r.url.endswith(path), timeout=15_000) as answered:
        action()
    expect(page.locator("#results")).to_have_attribute("aria-busy", "false")
    response = answered.value
    assert response.status == 200, response.text()
    sent = page.evaluate("() => window.__sent[window.__sent.length - 1]")
    assert sent["url"].endswith(path)
    return sent["fields"]


def api_ids(answer: dict) -> list[str]:
    return [r["id"] for r in answer["results"]]


def api_text(url: str, query: str, **fields) -> dict:
    response = httpx.post(f"{url}/api/search/text", json={"query": query, "top_k": TOP_K, **fields}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def api_compose(url: str, *, image: bytes | None = None, filters: dict | None = None, **fields) -> dict:
    data = {**fields, "top_k": str(TOP_K), "filters": json.dumps(filters or {})}
    files = {"image": ("query.jpg", image, "image/jpeg")} if image is not None else None
    response = httpx.post(f"{url}/api/search/compose", data=data, files=files, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def text_search(page, query: str) -> list[str]:
    page.fill("#query", query)
    search_via(page, "/api/search/text", lambda: page.click("#search-button"))
    return shown_ids(page)


def test_page_image_then_modifier_then_refine_from_a_card(browser, server, embeddings_dir):
    """(a) an upload refined by "in blue" runs /api/search/compose and shows the composed caption; "refine" on a
    card makes that item the reference, keeping the modifier."""
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    meta = load_embeddings(embeddings_dir).metadata
    query_image = meta["path"][11]
    image_bytes = Path(query_image).read_bytes()
    women = {"gender": ["WOMEN"]}
    expected = api_compose(server, image=image_bytes, modifier="in blue", filters=women)
    page, errors = open_page(browser, server)
    expect(page.locator("#health")).to_contain_text("48 items")
    expect(page.locator("#modifier-row")).to_be_hidden()  # no reference yet: nothing to change
    page.select_option("#filter-gender", "WOMEN")
    page.set_input_files("#image-input", query_image)
    search_via(page, "/api/search/image", lambda: page.click("#search-button"))
    expect(page.locator("#modifier-row")).to_be_visible()

    page.get_by_role("textbox", name="change:").fill("in blue")
    sent = search_via(page, "/api/search/compose", lambda: page.get_by_role("textbox", name="change:").press("Enter"))
    assert sent["modifier"] == ["in blue"]
    assert "item" not in sent
    assert sent["image"] == [{"file": Path(query_image).name, "size": len(image_bytes)}]
    assert json.loads(sent["filters"][0]) == women
    assert shown_ids(page) == api_ids(expected)
    assert expected["composed_caption"] and "blue" in expected["composed_caption"]
    composed = page.locator("#composed")
    expect(composed).to_contain_text(f"searching for: “{expected['composed_caption']}”")
    assert expected["caption_estimated"] is True
    expect(composed).to_contain_text(expected["reference_caption"])
    chips = page.locator("#chips .chip")
    expect(chips).to_have_count(2)
    expect(chips.nth(0)).to_contain_text("reference:")
    expect(chips.nth(1)).to_contain_text("change: in blue")
    page.screenshot(path=str(ARTIFACTS / "page_compose_modifier.png"), full_page=True)

    # "refine" on the second card: that item becomes the reference (the upload goes), the modifier stays
    card = page.locator("#results .card").nth(1)
    picked = card.get_attribute("data-id")
    picked_caption = card.locator(".caption").inner_text()
    sent = search_via(
        page, "/api/search/compose", lambda: card.get_by_role("button", name="refine from this item").click()
    )
    expected = api_compose(server, item=picked, modifier="in blue", filters=women)
    assert sent["item"] == [picked]
    assert "image" not in sent
    assert shown_ids(page) == api_ids(expected)
    assert picked not in shown_ids(page)  # the reference is left out of its own results
    expect(page.locator("#preview")).to_be_hidden()  # the button did not open the preview
    expect(page.locator("#thumb-box")).to_be_hidden()
    expect(chips.nth(0)).to_contain_text(f"reference: {picked_caption[:20]}")
    expect(composed).to_contain_text(f"searching for: “{expected['composed_caption']}”")
    assert expected["caption_estimated"] is False

    # a new modifier for the same reference item
    modifier = page.get_by_role("textbox", name="change:")
    modifier.fill("for men")
    sent = search_via(page, "/api/search/compose", lambda: modifier.press("Enter"))
    assert (sent["item"], sent["modifier"]) == ([picked], ["for men"])
    assert shown_ids(page) == api_ids(api_compose(server, item=picked, modifier="for men", filters=women))
    expect(chips.nth(1)).to_contain_text("change: for men")
    page.screenshot(path=str(ARTIFACTS / "page_compose_refine_item.png"), full_page=True)
    assert errors == []


def test_page_exclude_box(browser, server):
    """(b) the exclude box: on a plain text query it sends `minus` to /api/search/text; with a reference item
    it goes into the compose request."""
    from playwright.sync_api import expect

    plain = api_ids(api_text(server, "a dress"))
    without = api_text(server, "a dress", minus=["stripes"])
    assert api_ids(without) != plain  # the exclusion changes this query's results, so the check below means something
    page, errors = open_page(browser, server)
    expect(page.locator("#health")).to_contain_text("48 items")
    assert text_search(page, "a dress") == plain
    expect(page.locator("#chips-row")).to_be_hidden()

    page.get_by_role("textbox", name="without:").fill("stripes")
    sent = search_via(page, "/api/search/text", lambda: page.click("#add-minus"))
    assert sent["minus"] == ["stripes"]
    assert shown_ids(page) == api_ids(without)
    assert not [c for c in shown_captions(page) if "strip" in c.lower()]
    expect(page.get_by_role("textbox", name="without:")).to_have_value("")  # the box was emptied into a chip
    expect(page.locator("#chips .chip")).to_have_text(["without: stripes×"])
    page.screenshot(path=str(ARTIFACTS / "page_exclude_text.png"), full_page=True)

    # a reference item (no modifier) with the exclusion: the compose route with `minus`
    card = page.locator("#results .card").nth(0)
    picked = card.get_attribute("data-id")
    sent = search_via(
        page, "/api/search/compose", lambda: card.get_by_role("button", name="refine from this item").click()
    )
    assert sent["minus"] == ["stripes"]
    assert "modifier" not in sent
    expected = api_compose(server, item=picked, minus=["stripes"])
    assert shown_ids(page) == api_ids(expected)
    assert api_ids(expected) != api_ids(api_compose(server, item=picked))
    assert not [c for c in shown_captions(page) if "strip" in c.lower()]

    # removing the chip searches again without it
    search_via(page, "/api/search/compose", lambda: page.get_by_role("button", name="remove without: stripes").click())
    assert shown_ids(page) == api_ids(api_compose(server, item=picked))
    page.screenshot(path=str(ARTIFACTS / "page_exclude_item.png"), full_page=True)
    assert errors == []


def test_page_more_and_less_like_this(browser, server):
    """(c) "more like this" / "less like this" on a card refine a text query through /api/search/compose (the
    text as modifier); each is a chip, and removing it (or "clear refinements") restores the plain results."""
    from playwright.sync_api import expect

    page, errors = open_page(browser, server)
    expect(page.locator("#health")).to_contain_text("48 items")
    plain = text_search(page, "a dress")
    assert plain == api_ids(api_text(server, "a dress"))
    cards = page.locator("#results .card")
    # no API key: images load from a plain src, as before
    assert cards.first.locator("img").get_attribute("src") == f"/images/{plain[0]}"
    chips = page.locator("#chips .chip")

    liked = plain[2]
    sent = search_via(
        page, "/api/search/compose", lambda: cards.nth(2).get_by_role("button", name="more like this").click()
    )
    assert sent["like"] == [liked]
    assert sent["modifier"] == ["a dress"]
    expected = api_ids(api_compose(server, modifier="a dress", like=[liked]))
    assert expected != plain
    assert shown_ids(page) == expected
    assert liked not in shown_ids(page)
    expect(page.locator("#preview")).to_be_hidden()
    expect(chips).to_have_count(1)
    expect(chips.first).to_contain_text("more like:")
    page.screenshot(path=str(ARTIFACTS / "page_more_like_this.png"), full_page=True)
    search_via(page, "/api/search/text", lambda: chips.first.get_by_role("button").click())
    assert shown_ids(page) == plain
    expect(page.locator("#chips-row")).to_be_hidden()

    unliked = plain[0]
    sent = search_via(
        page, "/api/search/compose", lambda: cards.nth(0).get_by_role("button", name="less like this").click()
    )
    assert sent["unlike"] == [unliked]
    expected = api_ids(api_compose(server, modifier="a dress", unlike=[unliked]))
    assert expected != plain
    assert shown_ids(page) == expected
    expect(chips).to_have_count(1)
    expect(chips.first).to_contain_text("less like:")
    page.screenshot(path=str(ARTIFACTS / "page_less_like_this.png"), full_page=True)
    search_via(page, "/api/search/text", lambda: page.get_by_role("button", name="remove less like").click())
    assert shown_ids(page) == plain

    # both at once, then "clear refinements" goes back to the plain search
    search_via(page, "/api/search/compose", lambda: cards.nth(1).get_by_role("button", name="more like this").click())
    sent = search_via(
        page, "/api/search/compose", lambda: cards.nth(3).get_by_role("button", name="less like this").click()
    )
    like, unlike = sent["like"], sent["unlike"]
    assert len(like) == len(unlike) == 1
    assert shown_ids(page) == api_ids(api_compose(server, modifier="a dress", like=like, unlike=unlike))
    expect(chips).to_have_count(2)
    search_via(page, "/api/search/text", lambda: page.click("#clear-refinements"))
    assert shown_ids(page) == plain
    expect(chips).to_have_count(0)
    assert errors == []


@pytest.fixture(scope="module")
def keyed_server(embeddings_dir):
    """`serve --api-key`: every /api and /images route needs the X-API-Key header (the health checks too)."""
    served = ServedIndex("--embeddings", str(embeddings_dir), "--api-key", API_KEY, headers={"X-API-Key": API_KEY})
    yield served.url
    served.close()


def test_page_images_behind_the_api_key(browser, keyed_server):
    """(d) with `--api-key`, the page asks for the key once, then result images load (fetched with the header,
    shown from object URLs) while an image request without the key is refused."""
    from playwright.sync_api import expect

    url = keyed_server
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    asked: list[str] = []

    def enter_key(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept(API_KEY)

    page.on("dialog", enter_key)
    page.add_init_script(RECORD_REQUESTS)
    page.goto(url + "/")
    expect(page.locator("#health")).to_contain_text("48 items")
    assert len(asked) == 1 and "API key" in asked[0]
    ids = text_search(page, "a dress")
    assert ids == api_ids(
        httpx.post(
            f"{url}/api/search/text", json={"query": "a dress", "top_k": TOP_K}, headers={"X-API-Key": API_KEY}
        ).json()
    )
    images = page.locator("#results .card img")
    expect(images).to_have_count(TOP_K)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .card img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=15_000,
    )
    assert all(src.startswith("blob:") for src in images.evaluate_all("is => is.map(i => i.src)"))
    # the same image without the key: refused, from the page and from outside it
    image_url = f"/images/{ids[0]}"
    assert page.evaluate("u => fetch(u, {cache: 'no-store'}).then(r => r.status)", image_url) == 401
    assert httpx.get(url + image_url).status_code == 401
    assert httpx.get(url + image_url, headers={"X-API-Key": API_KEY}).status_code == 200
    # the preview and the chips' thumbnails load the same way
    page.locator("#results .card").first.click()
    page.wait_for_function("() => document.getElementById('preview-img').naturalWidth > 0", timeout=10_000)
    page.locator("#preview").click()
    search_via(
        page,
        "/api/search/compose",
        lambda: page.locator("#results .card").nth(1).get_by_role("button", name="more like this").click(),
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#chips img, #results .card img')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=15_000,
    )
    page.screenshot(path=str(ARTIFACTS / "page_api_key_images.png"), full_page=True)
    assert len(asked) == 1  # asked once, then remembered
    assert errors == []


def test_page_exclude_on_an_uploaded_image(browser, server, embeddings_dir):
    from playwright.sync_api import expect

    query_image = load_embeddings(embeddings_dir).metadata["path"][11]
    image_bytes = Path(query_image).read_bytes()
    page, _ = open_page(browser, server)
    expect(page.locator("#health")).to_contain_text("48 items")
    page.set_input_files("#image-input", query_image)
    search_via(page, "/api/search/image", lambda: page.click("#search-button"))
    page.get_by_role("textbox", name="without:").fill("stripes")
    search_via(page, "/api/search/compose", lambda: page.get_by_role("textbox", name="without:").press("Enter"))
    assert shown_ids(page) == api_ids(api_compose(server, image=image_bytes, minus=["stripes"]))
