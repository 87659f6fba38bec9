"""Regenerate the app's screenshot (docs/img/app.png, shown in docs/app.md): start `ditlens app`
on the built-in model, run one transport in Debian's headless Chromium and save the page once
the run has finished.

    python scripts/app_screenshot.py                    # writes docs/img/app.png
    python scripts/app_screenshot.py --out /tmp/app.png --alpha 0.5

Needs /usr/bin/chromium and /usr/bin/chromedriver (scripts/setup.sh installs them with apt) and
Selenium (the test extra); nothing is downloaded, and the page asks nothing of any other host.
The picture is written only if the run ends with "Done:" in the transport tab's status line
and its result image, score table and download are on the page; else the script exits 1 and
says what it saw.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ditlens.app.browser import WINDOW_WIDTH, NotServing, chromium_missing, served_app, start_chromium

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "img" / "app.png"
STARTUP_TIMEOUT_S = 120  # imports (torch, diffusers, gradio) and the model's load on a busy 2-core CPU
RUN_TIMEOUT_S = 180  # one transport of the built-in model (a batch of 3 with CFG, 8 steps) and its scores
MAX_HEIGHT = 2400  # the window's height for the picture: it fits the whole run


class ScreenshotError(RuntimeError):
    """The page did not show a finished run: no picture is written."""


def script(driver, code: str):
    return driver.execute_script(code)


def status_text(driver) -> str:
    return script(
        driver, "const s = document.querySelector('#transport-status .ditlens-status'); return s ? s.innerText : '';"
    )


def wait(driver, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition(driver):
        if time.monotonic() > deadline:
            raise ScreenshotError(
                f"timed out after {timeout:.0f} s waiting for {what}; status line: {status_text(driver)!r}"
            )
        time.sleep(0.2)


def type_into(driver, selector: str, text: str) -> None:
    """Replace a Gradio box's value and let Gradio see the change."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text)
    box.send_keys(Keys.TAB)


def run_transport(driver, url: str, alpha: float) -> str:
    """Open the transport tab, run the built-in model's example pair at `alpha`; the status line."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    tab = "button[role=tab][data-tab-id=transport]"
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, tab), 30, "the page's tabs")
    driver.find_element(By.CSS_SELECTOR, tab).click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#transport-run").is_displayed(), 10, "the transport tab")
    type_into(driver, "#transport-alpha input[type=number]", f"{alpha:g}")
    driver.find_element(By.CSS_SELECTOR, "#transport-run").click()
    wait(driver, lambda d: "transported at alpha" in status_text(d), RUN_TIMEOUT_S, "the transport to finish")
    status = status_text(driver)
    if not status.startswith("Done:"):
        raise ScreenshotError(f"the run did not finish cleanly: {status!r}")
    for selector, what in (
        ("#transport-result img", "the result image"),
        ("#transport-strip img", "the strip"),
    ):
        wait(
            driver,
            lambda d, s=selector: script(
                d, f"const i = document.querySelector('{s}'); return !!(i && i.complete && i.naturalWidth > 0);"
            ),
            15,
            what,
        )
    wait(
        driver,
        lambda d: "PSNR to target" in script(d, "return document.querySelector('#transport-scores').innerText;"),
        15,
        "the score table",
    )
    wait(
        driver,
        lambda d: ".zip" in script(d, "return document.querySelector('#transport-download').innerText;"),
        15,
        "the download of the run's files",
    )
    return status


def screenshot(out: Path, alpha: float) -> str:
    """Run the app and the browser, write the picture to `out`; the run's status line."""
    missing = chromium_missing()
    if missing:
        raise ScreenshotError(
            f"{', '.join(missing)} missing: scripts/setup.sh installs chromium and chromium-driver with apt."
        )
    with tempfile.TemporaryDirectory(prefix="ditlens-screenshot-") as name:
        tmp = Path(name)
        try:
            with served_app(tmp, STARTUP_TIMEOUT_S) as url:
                driver = start_chromium(tmp / "chromium-profile")
                try:
                    status = run_transport(driver, url, alpha)
                    shoot(driver, tmp / "app.png")
                finally:
                    driver.quit()
        except NotServing as err:
            raise ScreenshotError(str(err)) from None
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / "app.png", out)
        return status


def shoot(driver, shot: Path) -> None:
    """The whole run (status, images, scores, download) in one tall window, cut below the download."""
    driver.set_window_size(WINDOW_WIDTH, MAX_HEIGHT)
    time.sleep(1.0)  # let the page lay out at the new size
    script(driver, "window.scrollTo(0, 0);")
    bottom = script(
        driver,
        "const r = document.querySelector('#transport-download').getBoundingClientRect();"
        "return Math.ceil((r.bottom + 24) * window.devicePixelRatio);",
    )
    if not driver.save_screenshot(str(shot)):
        raise ScreenshotError("Chromium saved no screenshot.")
    from PIL import Image

    with Image.open(shot) as image:
        image.crop((0, 0, image.width, min(image.height, int(bottom)))).save(shot)
    if shot.stat().st_size < 10_000:
        raise ScreenshotError("Chromium's screenshot is empty.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"the picture (default: {DEFAULT_OUT.relative_to(ROOT)})"
    )
    parser.add_argument("--alpha", type=float, default=0.75, help="transport strength of the run shown (default: 0.75)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        status = screenshot(args.out, args.alpha)
    except ScreenshotError as err:
        print(f"app_screenshot: {err}", file=sys.stderr)
        return 1
    print(f"app_screenshot: wrote {args.out} ({status}) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
