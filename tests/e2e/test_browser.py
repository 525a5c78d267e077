"""The chat tab in a real headless browser: upload an image, ask, watch the answer stream, at desktop and phone width.

Needs Debian's Chromium (`scripts/install_browser.sh`; never `playwright install`); skipped when it is missing.
Screenshots are written to `test-artifacts/` (gitignored):

    EVE_TEST_MODEL=/tmp/probe/run OMP_NUM_THREADS=1 python -m pytest tests/e2e/test_browser.py -q
"""

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
EXAMPLE = ROOT / "assets" / "examples" / "ocr" / "ocr-1.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
# The status line after an answer, e.g. "last answer 192 prompt tokens, first token 0.30 s, 128 new tokens at ...".
STATUS = re.compile(r"last answer (\d+) prompt tokens, first token [\d.]+ s, (\d+) new tokens at [\d.]+ tokens/s \(done\)")
ANSWER_TIMEOUT_MS = 40_000


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium binary on PATH (install it with scripts/install_browser.sh)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _send_image_and_question(page: Page, image: Path, question: str) -> None:
    chat_input = page.locator("#chat-input")
    chat_input.locator("input[type=file]").set_input_files(str(image))
    # The thumbnail points at the server's copy once the upload has finished.
    expect(chat_input.locator('img[src*="/gradio_api/file="]')).to_have_count(1, timeout=15_000)
    chat_input.locator("textarea").fill(question)
    chat_input.locator("textarea").press("Enter")


def _wait_for_answer(page: Page) -> re.Match:
    """Waits for streamed text in the assistant bubble, then for the status line's figures of that answer."""
    page.wait_for_function(
        """() => { const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
                   return bots.length > 0 && bots[bots.length - 1].innerText.trim().length > 0; }""",
        timeout=ANSWER_TIMEOUT_MS,
    )
    status = page.locator("#status-line")
    expect(status).to_contain_text(STATUS, timeout=ANSWER_TIMEOUT_MS)
    return STATUS.search(status.inner_text())


def _assert_chat_is_usable(page: Page) -> None:
    """Input, send and stop are on screen horizontally, the chatbot is visible, and the page does not scroll sideways."""
    width = page.evaluate("window.innerWidth")
    controls = {"input": page.locator("#chat-input textarea"),
                "send": page.locator('#chat-input [data-testid="submit-button"]'),
                "stop": page.locator("#stop-button"), "chat input box": page.locator("#chat-input")}
    for name, control in controls.items():
        expect(control).to_be_visible()
        box = control.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (name, box, width)
    # The input box keeps at least half the width, so a question stays readable while typed.
    assert controls["chat input box"].bounding_box()["width"] >= width / 2
    expect(page.locator("#chatbot")).to_be_visible()
    scroll_width = page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= width + 1, f"page scrolls sideways: {scroll_width} px wide in a {width} px viewport"


# The screenshot starts at `top`: the task choice on a desktop, the conversation on a phone (where the rest fits below).
@pytest.mark.parametrize("name, width, height, top", [("desktop", 1280, 900, "#task-preset"),
                                                      ("phone", 390, 844, "#chatbot")])
def test_chat_streams_an_answer_to_an_uploaded_image(browser, running_app, name, width, height, top):
    url, ctx = running_app
    before = {c["id"] for c in ctx.storage.list_conversations(limit=500)}
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(url)
        _send_image_and_question(page, EXAMPLE, "What is written in this image?")
        figures = _wait_for_answer(page)
        _assert_chat_is_usable(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator(top).evaluate("element => element.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(ARTIFACTS / f"chat-{name}.png"))
        page.screenshot(path=str(ARTIFACTS / f"chat-{name}-full.png"), full_page=True)
    finally:
        page.close()
    assert not errors, errors

    # The turn is logged: one new conversation, the image with the question, and the answer the status line reports.
    new = [c for c in ctx.storage.list_conversations(limit=500) if c["id"] not in before]
    assert len(new) == 1
    question, answer = ctx.storage.get_conversation(new[0]["id"])["messages"]
    assert question["role"] == "user" and len(question["images"]) == 1
    assert answer["role"] == "assistant" and answer["status"] == "done" and answer["text"].strip()
    assert (answer["generation"]["prompt_tokens"], answer["generation"]["new_tokens"]) == tuple(map(int, figures.groups()))


def test_a_browser_keeps_its_conversations_across_reloads_and_nobody_else_sees_them(browser, running_app):
    url, _ = running_app
    question = "Which private words are written here?"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    stranger = browser.new_page(viewport={"width": 1280, "height": 900})  # its own context: its own local storage
    try:
        page.goto(url)
        _send_image_and_question(page, EXAMPLE, question)
        _wait_for_answer(page)
        page.reload()
        expect(page.get_by_role("tab", name="History")).to_be_visible()
        page.get_by_role("tab", name="History").click()
        expect(page.locator("body")).to_contain_text(question, timeout=15_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "history-own-conversations.png"))

        stranger.goto(url)
        stranger.get_by_role("tab", name="History").click()
        stranger.get_by_role("button", name="Search").click()
        stranger.wait_for_timeout(1500)
        assert question not in stranger.locator("body").inner_text()
        stranger.screenshot(path=str(ARTIFACTS / "history-stranger.png"))
    finally:
        page.close()
        stranger.close()
