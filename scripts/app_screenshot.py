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
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "img" / "app.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
STARTUP_TIMEOUT_S = 120  # imports (torch, diffusers, gradio) and the model's load on a busy 2-core CPU
RUN_TIMEOUT_S = 180  # one transport of the built-in model (a batch of 3 with CFG, 8 steps) and its scores
WIDTH, MAX_HEIGHT = 1400, 2400  # the page's width as the browser test sees it; the height fits the page

# as tests/test_app.py starts Chromium: headless, no sandbox (containers), nothing in the background
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
    f"--window-size={WIDTH},1050",
)


class ScreenshotError(RuntimeError):
    """The page did not show a finished run: no picture is written."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    """`ditlens app` on the built-in model on a free localhost port: (process, url, its log)."""
    port, log = free_port(), tmp / "app.log"
    env = os.environ | {
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(tmp / "gradio"),
        "PYTHONUNBUFFERED": "1",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ditlens.cli", "app", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScreenshotError(f"ditlens app exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc, url, log
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise ScreenshotError(
        f"ditlens app did not answer at {url} within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
    )


def start_browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager is not needed (both paths given): stay offline
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


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
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            raise ScreenshotError(
                f"{path} is missing: scripts/setup.sh installs chromium and chromium-driver with apt."
            )
    with tempfile.TemporaryDirectory(prefix="ditlens-screenshot-") as name:
        tmp = Path(name)
        proc, url, _ = start_app(tmp)
        driver = None
        try:
            driver = start_browser(tmp / "chromium-profile")
            status = run_transport(driver, url, alpha)
            # the whole run (status, images, scores, download) in one tall window, cut below the download
            driver.set_window_size(WIDTH, MAX_HEIGHT)
            time.sleep(1.0)  # let the page lay out at the new size
            script(driver, "window.scrollTo(0, 0);")
            bottom = script(
                driver,
                "const r = document.querySelector('#transport-download').getBoundingClientRect();"
                "return Math.ceil((r.bottom + 24) * window.devicePixelRatio);",
            )
            shot = tmp / "app.png"
            if not driver.save_screenshot(str(shot)):
                raise ScreenshotError("Chromium saved no screenshot.")
            from PIL import Image

            with Image.open(shot) as image:
                image.crop((0, 0, image.width, min(image.height, int(bottom)))).save(shot)
            if shot.stat().st_size < 10_000:
                raise ScreenshotError("Chromium's screenshot is empty.")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, out)
            return status
        finally:
            if driver is not None:
                driver.quit()
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
