"""The status line of a tab (Done, Degenerate, Error, or a note) and the guard that turns
every exception of a handler into one: the page shows a message, never a traceback."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any

from .limits import plural

log = logging.getLogger("ditlens.app")

STOPPED = "Stopped: a running job ends at its next denoising step, a waiting one leaves the queue."


class Cancelled(Exception):
    """A job was stopped (from the page, or by a client) before it finished."""


def status_html(kind: str, message: str) -> str:
    """A status line for the page: kind is ok, warn (a degenerate result), error or info; the
    message is escaped."""
    label = {"ok": "Done", "warn": "Degenerate", "error": "Error", "info": ""}[kind]
    prefix = f"<b>{label}:</b> " if label else ""
    return f"<div class='ditlens-status {kind}'>{prefix}{html.escape(message)}</div>"


def result_status(summary: str, problems: list[str], groups: int, what: str) -> str:
    """The status line of a finished run: Done with its summary, or, where `problems` (one
    phrase per degenerate image or condition, see `degenerate`) is not empty, Degenerate,
    with how many of the `groups` (`what`: conditions, images) and why."""
    if not problems:
        return status_html("ok", summary)
    return status_html(
        "warn",
        f"{len(problems)} of {plural(groups, what)} degenerate: {'; '.join(problems)}. {summary} "
        "The scores of a degenerate image describe a failed generation.",
    )


def notes_markdown(not_measured: list[str]) -> str:
    """What a run could not measure, one line each (the page's note under a score table)."""
    return "\n".join(f"- not measured: {html.escape(line)}" for line in not_measured)


def guard(fn: Callable[..., tuple], on_error: tuple) -> Callable[..., tuple]:
    """Turn exceptions into an error status (the last output); the other outputs get
    `on_error` (None clears a picture, `gr.skip()` keeps a value such as a picker's).

    Bad input (ValueError and its kind) shows its message; anything else shows its type and
    message, with the traceback logged to the server's console, never sent to the page."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> tuple:
        try:
            return fn(*args, **kwargs)
        except Cancelled as err:
            return (*on_error, status_html("info", str(err)))
        except (ValueError, FileNotFoundError) as err:
            message = str(err)
        except Exception as err:  # noqa: BLE001 - the page must get a message, not a traceback
            log.exception("ditlens app: unexpected error")
            message = f"Unexpected {type(err).__name__}: {err} (the server's console has the details)."
        return (*on_error, status_html("error", message))

    return wrapper
