"""The web page at / in a real browser (headless Chromium, driven by playwright) against the app
served by uvicorn on 127.0.0.1: register, list, query, rename and remove from the page, and the
server's error messages, the token and user-typed labels as the page shows them."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright
from serve_helpers import running_server, shots

from fewshot_metric import FewShotClassifier
from fewshot_metric.data.base import open_image
from fewshot_metric.serve import ServeOptions, create_app
from fewshot_metric.store import check_label

STEP_MS = 15_000  # the most any one step (a click's answer, a page load) may take
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium (no `playwright install`: that downloads browsers); missing: a
    failure in CI, a skip elsewhere."""
    path = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    if path is None:
        message = ("the browser test needs Chromium: install Debian's package with "
                   "`apt-get install chromium` (.ci/run does)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS,
                                             timeout=STEP_MS)
        yield browser
        browser.close()


class Dialogs:
    """The page's dialogs: confirms answered from `answers` (in order), every one recorded
    as (type, message)."""

    def __init__(self) -> None:
        self.answers: list[bool] = []
        self.seen: list[tuple[str, str]] = []

    def __call__(self, dialog) -> None:
        self.seen.append((dialog.type, dialog.message))
        if dialog.type == "confirm" and self.answers and self.answers.pop(0):
            dialog.accept()
        else:
            dialog.dismiss()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., tuple[Page, Dialogs]]]:
    """open_page(app, query="") -> (the page at /{query} of `app` served on 127.0.0.1, its
    Dialogs); at the end: no uncaught script error, no alert, nothing fetched from elsewhere
    (the page works offline), the server stopped."""
    expect.set_options(timeout=STEP_MS)
    stack, script_errors, fetched, dialogs = ExitStack(), [], [], Dialogs()
    served: list[str] = []

    def start(app, query: str = "") -> tuple[Page, Dialogs]:
        served.append(stack.enter_context(running_server(app)))
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        stack.callback(context.close)
        page = context.new_page()
        page.set_default_timeout(STEP_MS)
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.on("request", lambda request: fetched.append(request.url))
        page.on("dialog", dialogs)
        page.goto(f"{served[-1]}/{query}")
        return page, dialogs

    with stack:
        yield start
    assert not script_errors
    assert [url for url in fetched if not url.startswith((*(f"{s}/" for s in served),
                                                          "blob:", "data:"))] == []
    assert [kind for kind, _ in dialogs.seen if kind == "alert"] == []


# ----------------------------------------------------------------------------- page actions
def register(page: Page, label: str, files) -> None:
    """Types `label`, chooses `files` (paths, or playwright file payloads), clicks Register."""
    page.get_by_test_id("register-label").fill(label)
    page.get_by_test_id("register-files").set_input_files(files)
    page.get_by_test_id("register-submit").click()


def data_transfer(page: Page, paths: list[Path]):
    """A DataTransfer holding the PNG files `paths`, in the page (what a drop or paste carries)."""
    files = [[p.name, base64.b64encode(p.read_bytes()).decode("ascii")] for p in paths]
    return page.evaluate_handle("""files => {
        const data = new DataTransfer();
        for (const [name, b64] of files) {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            data.items.add(new File([bytes], name, {type: "image/png"}));
        }
        return data;
    }""", files)


def paste(page: Page, paths: list[Path]) -> None:
    """What Ctrl+V of copied image files does: a paste event carrying them."""
    page.evaluate("""data => document.body.dispatchEvent(
        new ClipboardEvent("paste", {clipboardData: data, bubbles: true}))""",
                  data_transfer(page, paths))


def drop(page: Page, zone: str, paths: list[Path]) -> None:
    page.get_by_test_id(zone).dispatch_event("drop", {"dataTransfer": data_transfer(page, paths)})


def item_of(page: Page, label: str):
    """The class list's entry of `label` (its text exactly)."""
    return page.get_by_test_id("class-item").filter(
        has=page.get_by_test_id("class-label").get_by_text(label, exact=True))


def expect_listed(page: Page, classes: dict[str, int]) -> None:
    """The class list shows exactly `classes` {label: shots}, in this order."""
    expect(page.get_by_test_id("class-label")).to_have_text(list(classes))
    expect(page.get_by_test_id("class-count")).to_have_text(
        [f"{n} shot{'' if n == 1 else 's'}" for n in classes.values()])


def expect_thumbnail(page: Page, label: str) -> None:
    item = item_of(page, label)
    expect(item).to_have_attribute("data-thumb", "loaded")
    thumb = item.get_by_test_id("class-thumb")
    expect(thumb).to_have_attribute("alt", f"thumbnail of {label}")
    expect(thumb).to_have_js_property("naturalWidth", 64)  # the server's 64x64 PNG, decoded


def expect_error(page: Page, *parts: str) -> None:
    """The error box shows every one of `parts` (the server's detail among them)."""
    expect(page.get_by_test_id("error")).to_be_visible()
    for part in parts:
        expect(page.get_by_test_id("error-text")).to_contain_text(part)


# ----------------------------------------------------------------------------- the tests
def test_page_registers_lists_queries_renames_and_removes(
        open_page, classifier: FewShotClassifier, glyph_images: Path, names: list[str],
        tmp_path: Path) -> None:
    assert (classifier.store.metric, classifier.store.mode) == ("sqeuclidean", "prototype")
    preloaded, alpha_from, xss_from = names[2], names[0], names[1]
    classifier.register(preloaded, shots(glyph_images, preloaded, slice(0, 3)))  # no thumbnail
    page, dialogs = open_page(create_app(classifier))

    info = page.get_by_test_id("info")
    expect(info).to_contain_text(f"model {classifier.store.fingerprint[:12]} · sqeuclidean · "
                                 f"prototype mode · flat index · 1 class · 3 shots")
    expect_listed(page, {preloaded: 3})
    expect(item_of(page, preloaded)).to_have_attribute("data-thumb", "none")
    expect(item_of(page, preloaded).get_by_test_id("class-thumb-placeholder")).to_be_visible()

    status = page.get_by_test_id("status")
    register(page, "Alpha", shots(glyph_images, alpha_from, slice(0, 2)))
    expect(status).to_have_text("Created Alpha with 2 shots.")
    register(page, "Alpha", shots(glyph_images, alpha_from, slice(2, 3)))
    expect(status).to_have_text("Added 1 shot to Alpha: 3 shots now.")
    page.get_by_test_id("register-label").fill(XSS)
    drop(page, "register-drop", shots(glyph_images, xss_from, slice(0, 3)))
    expect(page.get_by_test_id("register-chosen").locator("li")).to_have_count(3)
    page.get_by_test_id("register-submit").click()
    expect(status).to_have_text(f"Created {XSS} with 3 shots.")

    expect_listed(page, {preloaded: 3, "Alpha": 3, XSS: 3})
    expect_thumbnail(page, "Alpha")
    expect_thumbnail(page, XSS)
    expect(info).to_contain_text("3 classes · 9 shots")
    assert page.locator("img[src='x']").count() == 0  # the label is text, not an element
    assert classifier.store.counts == {preloaded: 3, "Alpha": 3, XSS: 3}

    # expected answers by hand: squared distances to the means of the shots, nearest first
    means = {label: classifier.embedder.embed(shots(glyph_images, name, slice(0, 3))).mean(0)
             for label, name in ((preloaded, preloaded), ("Alpha", alpha_from), (XSS, xss_from))}

    def expect_answer(query: Path, label: str) -> None:
        emb = classifier.embedder.embed([query])[0]
        distances = {c: float(((emb - mean) ** 2).sum()) for c, mean in means.items()}
        nearest = sorted(distances, key=distances.get)
        assert nearest[0] == label  # the premise: the image's own class is the nearest
        card = page.get_by_test_id("prediction")
        expect(card).to_have_count(1)
        expect(card.get_by_test_id("prediction-answer")).to_have_text(label)
        expect(card.get_by_test_id("prediction-answer")).to_have_attribute("data-rejected",
                                                                            "false")
        expect(card.get_by_test_id("row-label")).to_have_text(nearest)  # k = 3, the default
        shown = [float(t) for t in card.get_by_test_id("row-distance").all_inner_texts()]
        np.testing.assert_allclose(shown, [distances[c] for c in nearest], rtol=2e-3)
        scores = [float(t) for t in card.get_by_test_id("row-score").all_inner_texts()]
        assert sum(scores) == pytest.approx(1, abs=3e-3) and scores == sorted(scores)[::-1]

    alpha_query = shots(glyph_images, alpha_from, slice(3, 4))
    page.get_by_test_id("query-files").set_input_files(alpha_query)
    expect(page.get_by_test_id("prediction-image")).to_have_text(alpha_query[0].name)
    expect_answer(alpha_query[0], "Alpha")
    xss_query = shots(glyph_images, xss_from, slice(3, 4))
    paste(page, xss_query)
    expect(page.get_by_test_id("prediction-image")).to_have_text("pasted image")
    expect_answer(xss_query[0], XSS)
    screenshot = tmp_path / "page.png"
    page.screenshot(path=screenshot, full_page=True)

    classifier.reject_distance = 0.0  # every query is farther than 0 from every class
    drop(page, "query-drop", alpha_query)
    answer = page.get_by_test_id("prediction-answer")
    expect(answer).to_have_attribute("data-rejected", "true")
    expect(answer).to_have_text("unknown")
    classifier.reject_distance = None

    alpha = item_of(page, "Alpha")
    alpha.get_by_test_id("class-rename").click()
    alpha.get_by_test_id("rename-input").fill("Beta")
    alpha.get_by_test_id("rename-save").click()
    expect(status).to_have_text("Renamed Alpha to Beta.")
    expect_listed(page, {preloaded: 3, "Beta": 3, XSS: 3})
    expect_thumbnail(page, "Beta")  # the thumbnail follows the class

    dialogs.answers = [False]
    item_of(page, XSS).get_by_test_id("class-remove").click()
    assert dialogs.seen[-1] == ("confirm", f'Remove the class "{XSS}" and its 3 shots? This '
                                           f"cannot be undone.")
    expect_listed(page, {preloaded: 3, "Beta": 3, XSS: 3})  # dismissed: nothing removed
    dialogs.answers = [True]
    item_of(page, XSS).get_by_test_id("class-remove").click()
    expect(status).to_have_text(f"Removed {XSS}; 2 classes left.")
    expect_listed(page, {preloaded: 3, "Beta": 3})
    expect(info).to_contain_text("2 classes · 6 shots")
    assert classifier.store.counts == {preloaded: 3, "Beta": 3}

    with Image.open(screenshot) as png:  # a real picture of the page, not a blank one
        assert png.width == 1200 and png.height >= 900
        assert len(png.convert("RGB").getcolors(1 << 24)) > 50


def test_page_shows_the_servers_errors_and_sends_the_token(
        open_page, classifier: FewShotClassifier, glyph_images: Path, names: list[str],
        tmp_path: Path) -> None:
    app = create_app(classifier, ServeOptions(token="s3cret", token_for_reads=True))
    page, _ = open_page(app, "?limit=1")
    expect(page.get_by_test_id("info")).to_have_text("server info unavailable")
    expect_error(page, "Could not list the classes (401 unauthorized): this server needs a "
                       "token for reads")

    token = page.get_by_test_id("token-input")
    token.fill("wrong")
    page.get_by_test_id("token-save").click()
    expect_error(page, "(401 unauthorized): the bearer token is wrong")
    token.fill("s3cret")
    page.get_by_test_id("token-save").click()
    expect(page.get_by_test_id("info")).to_contain_text("0 classes · 0 shots")
    expect(page.get_by_test_id("class-empty")).to_be_visible()
    expect(page.get_by_test_id("error")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('fewshot-metric token')") == "s3cret"

    paste(page, shots(glyph_images, names[0], slice(0, 1)))
    expect_error(page, "Could not query (400 bad_value): the store has no classes yet: "
                       "register some first")

    with pytest.raises(ValueError) as empty_label:
        check_label("", "label")
    register(page, "", shots(glyph_images, names[0], slice(0, 2)))
    expect_error(page, f"Could not register (400 bad_value): {empty_label.value}")
    not_an_image = b"shopping list: milk, eggs"
    with pytest.raises(OSError) as bad_file:
        open_image(not_an_image, "notes.txt")
    register(page, "notes", {"name": "notes.txt", "mimeType": "text/plain",
                             "buffer": not_an_image})
    expect_error(page, f"Could not register (415 bad_image): {bad_file.value}")
    page.get_by_test_id("register-files").set_input_files([])
    page.get_by_test_id("register-submit").click()
    expect_error(page, "Could not register: choose or drop at least one image first")
    assert len(classifier) == 0  # a failed request changes nothing

    register(page, "first", shots(glyph_images, names[0], slice(0, 2)))
    expect(page.get_by_test_id("status")).to_have_text("Created first with 2 shots.")
    register(page, "second", shots(glyph_images, names[1], slice(0, 2)))
    expect(page.get_by_test_id("status")).to_have_text("Created second with 2 shots.")

    # one class a page (?limit=1); the thumbnails come with the token too (reads need it)
    expect(page.get_by_test_id("page-info")).to_have_text("1–1 of 2")
    expect_listed(page, {"first": 2})
    expect_thumbnail(page, "first")
    page.get_by_test_id("page-next").click()
    expect(page.get_by_test_id("page-info")).to_have_text("2–2 of 2")
    expect_listed(page, {"second": 2})
    expect_thumbnail(page, "second")
    expect(page.get_by_test_id("page-next")).to_be_disabled()

    second = item_of(page, "second")
    second.get_by_test_id("class-rename").click()
    second.get_by_test_id("rename-input").fill("first")
    second.get_by_test_id("rename-save").click()
    expect_error(page, "Could not rename second (409 class_exists): cannot rename 'second' to "
                       "'first': a class 'first' already exists")
    with pytest.raises(ValueError) as blank_label:
        check_label("  ", "new_label")
    second.get_by_test_id("rename-input").fill("  ")
    second.get_by_test_id("rename-save").click()
    expect_error(page, f"Could not rename second (400 bad_value): {blank_label.value}")
    assert classifier.store.counts == {"first": 2, "second": 2}
    page.get_by_test_id("error-close").click()
    expect(page.get_by_test_id("error")).to_be_hidden()


def test_the_api_docs_render_offline(open_page, classifier: FewShotClassifier) -> None:
    """/docs is Swagger UI from the fastapi-offline package's files; open_page checks that
    nothing was fetched from elsewhere."""
    page, _ = open_page(create_app(classifier), "docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("fewshot-metric")
    expect(page.locator(".swagger-ui .opblock-summary-path", has_text="/register").first
           ).to_be_visible()
