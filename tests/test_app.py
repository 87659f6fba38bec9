"""`ditlens app` end to end: the built-in model served on localhost, driven in headless Chromium.

Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs them) are driven by
Selenium; nothing is downloaded. The test checks that a prompt with an unknown word shows
its error in the page (no traceback), runs one transport at alpha = 0.75, sees a progress
bar count the denoising steps, waits for the result image, its score table and the download
of its files, saves a screenshot, checks that the page asked nothing of any host but the
app, and stops a long (200-step) transport with the tab's stop button, after which the next
one runs at once.

docs/img/app.png (docs/app.md) is written by scripts/app_screenshot.py, which drives the page
the same way.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from ditlens.app.browser import NotServing, chromium_missing, served_app, start_chromium

STARTUP_TIMEOUT_S = 90  # imports (torch, diffusers, gradio) and model load on a busy 2-core CPU
GENERATION_TIMEOUT_S = 120  # one transport: a batch of 3 with CFG, 8 steps, on a busy CPU
LONG_STEPS = 200  # the most a request may ask (Limits.steps): minutes of the built-in model on a busy CPU
AFTER_STOP_TIMEOUT_S = 30  # 2 steps and one plot; a stopped job still running on would take minutes

SOURCE = "a large red circle in the center on a gray background"
TARGET = "a large blue square in the center on a gray background"
BAD_TARGET = "a large blue unicorn in the center on a gray background"


@pytest.fixture(scope="module")
def chromium() -> None:
    """Skip (saying why) where Chromium is missing, before the app takes time to start."""
    reason = chromium_missing_reason()
    if reason:
        print(f"SKIPPED test_app: {reason}", file=sys.stderr)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def app_url(chromium, tmp_path_factory):
    """`ditlens app` (built-in model) in a subprocess on a free localhost port."""
    try:
        with served_app(tmp_path_factory.mktemp("app"), STARTUP_TIMEOUT_S) as url:
            yield url
    except NotServing as err:
        pytest.fail(str(err))


def chromium_missing_reason() -> str | None:
    missing = chromium_missing()
    if missing:
        return (
            f"Chromium is not installed ({', '.join(missing)} missing) and could not be installed here; "
            "scripts/setup.sh runs 'apt-get install -y chromium chromium-driver' where it can."
        )
    return None


@pytest.fixture
def browser(chromium, tmp_path, monkeypatch):
    # Selenium Manager is not needed (both paths are given); should it run, it must stay offline
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    driver = start_chromium(tmp_path / "chromium-profile", log_requests=True)  # a fresh profile every run
    try:
        yield driver
    finally:
        driver.quit()


# ---- page helpers ------------------------------------------------------------------------------


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def wait(driver, condition, timeout: float, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        status = status_text(driver)
        pytest.fail(f"Timed out after {timeout:.0f} s waiting for {what}; transport status: {status!r}")


def type_into(driver, selector: str, text: str) -> None:
    """Replace a Gradio textbox's or number box's value and let Gradio see the change."""
    from selenium.webdriver.common.keys import Keys

    box = css(driver, selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text)  # replaces the selection: the box is never empty (Gradio rejects an empty slider)
    box.send_keys(Keys.TAB)


def status_text(driver) -> str:
    """The transport tab's status line ('' before the first run)."""
    return driver.execute_script(
        "const s = document.querySelector('#transport-status .ditlens-status'); return s ? s.innerText : '';"
    )


def open_transport_tab(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, "button[role=tab][data-tab-id=transport]"),
        30,
        "the page's tabs",
    )
    css(driver, "button[role=tab][data-tab-id=transport]").click()
    wait(driver, lambda d: css(d, "#transport-run").is_displayed(), 10, "the transport tab")


def run_transport(driver, target: str) -> None:
    type_into(driver, "#transport-target textarea, #transport-target input", target)
    css(driver, "#transport-run").click()


def result_image_size(driver) -> tuple[int, int]:
    """(natural width, natural height) of the loaded result image, (0, 0) if none yet."""
    return tuple(
        driver.execute_script(
            "const img = document.querySelector('#transport-result img');"
            "return img && img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0];"
        )
    )


def progress_text(driver) -> str:
    """The text of the progress bar over the result image while a generation runs ('' if none)."""
    return driver.execute_script(
        "const bar = document.querySelector('#transport-result [role=progressbar]');"
        "return bar ? bar.getAttribute('aria-valuetext') || 'running' : '';"
    )


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


# ---- page values -> library values (no model, no browser) --------------------------------------


def test_page_values_are_parsed_with_messages_that_name_them():
    from ditlens.app import parse_prompts, parse_seeds, parse_window

    assert parse_prompts(" a\n\n b \n") == ["a", "b"]
    assert parse_seeds("0, 1 2") == [0, 1, 2]
    with pytest.raises(ValueError, match="whole numbers"):
        parse_seeds("0 x")
    with pytest.raises(ValueError, match="at least one prompt"):
        parse_prompts("  \n")
    assert parse_window(0, 0, 16) is None  # the page's defaults: every step
    assert parse_window(4, 0, 16) == (4, 16)  # stop 0: to the last step
    assert parse_window(2, 8, None) == (2, 8)
    with pytest.raises(ValueError, match="stop"):
        parse_window(4, 0, None)


def test_errors_become_an_escaped_status_line_never_a_traceback():
    from ditlens.app.status import guard

    def bad_input(prompt):
        raise ValueError(f"Unknown word <{prompt}>")

    def bug(prompt):
        raise RuntimeError("boom")

    picture, status = guard(bad_input, (None,))("unicorn")
    assert picture is None and "Error:" in status and "&lt;unicorn&gt;" in status and "<unicorn>" not in status
    _, status = guard(bug, (None,))("x")
    assert "Unexpected RuntimeError: boom" in status and "Traceback" not in status


# ---- the browser test ----------------------------------------------------------------------------


def test_transport_in_the_browser(app_url, browser, tmp_path):
    started = time.perf_counter()
    open_transport_tab(browser, app_url)
    type_into(browser, "#transport-source textarea, #transport-source input", SOURCE)

    # 1. a word the built-in model does not know: an error in the page, no traceback
    run_transport(browser, BAD_TARGET)
    wait(browser, lambda d: "unicorn" in status_text(d), 30, "the unknown-word error")
    message = status_text(browser)
    assert message.startswith("Error:"), message
    assert "Unknown word 'unicorn'" in message and "The built-in model knows:" in message, message
    assert "Traceback" not in browser.page_source
    assert result_image_size(browser) == (0, 0)

    # 2. one transport at alpha = 0.75: progress while it runs, then the image
    type_into(browser, "#transport-alpha input[type=number]", "0.75")
    run_transport(browser, TARGET)
    # Gradio follows the pipeline's tqdm bar: "i / n steps" over the result while it runs
    wait(browser, lambda d: "steps" in progress_text(d), 30, "a progress bar of denoising steps over the result")
    wait(
        browser,
        lambda d: "transported at alpha = 0.75" in status_text(d),
        GENERATION_TIMEOUT_S,
        "the transport to finish",
    )
    wait(browser, lambda d: result_image_size(d) != (0, 0), 15, "the result image to load")
    width, height = result_image_size(browser)
    assert width >= 32 and height >= 32, (width, height)
    strip = browser.execute_script(
        "const i = document.querySelector('#transport-strip img'); return i && i.complete ? i.naturalWidth : 0;"
    )
    assert strip > 0
    # the command's scores as a table, and the run's files to download (a zip)
    scores = browser.execute_script("return document.querySelector('#transport-scores').innerText;")
    assert "PSNR to target" in scores and "a=0.75" in scores, scores
    link = browser.execute_script("const a = document.querySelector('#transport-download a'); return a ? a.href : '';")
    assert link.startswith(app_url) and link.endswith(".zip"), link

    css(browser, "#transport-result").location_once_scrolled_into_view  # noqa: B018 (scrolls)
    browser.execute_script("window.scrollTo(0, 0);")
    shot = tmp_path / "app.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # 3. offline page: every request went to the app itself (or stayed inside the browser)
    foreign = [u for u in requested_urls(browser) if not u.startswith((app_url, "data:", "blob:", "chrome:", "about:"))]
    assert not foreign, foreign

    # 4. a long transport (200 steps) stopped from the page; the model is free for the next one
    css(browser, "#transport-options button").click()  # open the options
    wait(browser, lambda d: css(d, "#transport-steps input").is_displayed(), 10, "the steps box")
    type_into(browser, "#transport-steps input", str(LONG_STEPS))
    css(browser, "#transport-run").click()
    wait(browser, lambda d: "steps" in progress_text(d), 30, "the long transport's progress bar")
    css(browser, "#transport-stop").click()
    wait(browser, lambda d: status_text(d).startswith("Stopped"), 10, "the stopped status line")
    wait(browser, lambda d: progress_text(d) == "", 10, "the progress bar to go")
    type_into(browser, "#transport-steps input", "2")
    stopped = time.perf_counter()
    css(browser, "#transport-run").click()
    wait(browser, lambda d: "transported at alpha" in status_text(d), AFTER_STOP_TIMEOUT_S, "the next transport")
    after_stop = time.perf_counter() - stopped
    print(
        f"test_app: screenshot {shot}; browser part took {time.perf_counter() - started:.1f} s; "
        f"a 2-step transport after a stop took {after_stop:.1f} s"
    )
