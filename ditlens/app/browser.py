"""The page in a real browser, for the browser test (tests/test_app.py) and the screenshot
script (scripts/app_screenshot.py): `ditlens app` on the built-in model in a subprocess on a
free localhost port, and Debian's headless Chromium driven through Selenium (the test extra).
Nothing is downloaded: Chromium and its driver are the system's (scripts/setup.sh installs them)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW_WIDTH = 1400  # the page's width in both the test and the screenshot

# headless, no sandbox (containers), nothing in the background
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
    f"--window-size={WINDOW_WIDTH},1050",
)


class NotServing(RuntimeError):
    """`ditlens app` exited, or did not answer in time; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_missing() -> list[str]:
    """The paths of Chromium and its driver that are not installed."""
    return [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]


@contextmanager
def served_app(tmp: Path, timeout: float) -> Iterator[str]:
    """`ditlens app` (built-in model) in a subprocess on a free localhost port, its output in
    tmp/app.log and Gradio's files under tmp/gradio: its url, once it answers (within
    `timeout` s, else `NotServing`). The process is stopped on leaving."""
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
    try:
        _wait_until_serving(url, proc, log, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_serving(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotServing(
                f"ditlens app exited with code {proc.returncode} before serving:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # not serving yet: wait and poll again until the deadline
            pass
        time.sleep(0.5)
    raise NotServing(f"ditlens app did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def start_chromium(profile: Path, log_requests: bool = False) -> Any:
    """Headless Chromium (a selenium `webdriver.Chrome`) with a fresh profile in `profile`;
    `log_requests` keeps the performance log, which lists every request the page made."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager is not needed (both paths are given); should it run, it must stay offline
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if log_requests:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
