"""The Gradio page over an `Explorer` (`build_app`: one tab per capability, a bounded queue)
and the server that serves it (`serve`).

Offline by design: analytics off, the default theme's fonts are served by Gradio itself,
server-side rendering (which would need Node) off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import disrupt_tab, find_tab, segment_tab, transport_tab
from .explorer import Explorer
from .limits import Limits
from .widgets import Page

CSS = """
.ditlens-status {padding: .5em .8em; border-radius: 6px; margin: .3em 0; font-size: .95em}
.ditlens-status.ok {background: #eef7ee; border: 1px solid #9c9}
.ditlens-status.error {background: #fdecea; border: 1px solid #e99; color: #611a15}
.ditlens-status.info {background: #f4f6fa; border: 1px solid #ccd}
.ditlens-status.warn {background: #fff8e1; border: 1px solid #e0c060; color: #5d4300}
#transport-result img {image-rendering: pixelated}  /* small images upscaled: crisp pixels */
"""

# one module per tab, each with ABOUT (the line under the tab's title) and layout(page)
TABS = {"find": find_tab, "disrupt": disrupt_tab, "segment": segment_tab, "transport": transport_tab}


def build_app(explorer: Explorer) -> Any:
    """The Gradio page (a `gr.Blocks`) over an `Explorer`, its queue bounded by the explorer's
    limits; `serve` launches it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home
    import gradio as gr

    page = Page(gr, explorer)
    with gr.Blocks(title="ditlens", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# ditlens: massive activations in diffusion transformers\n{explorer.describe()}")
        with gr.Accordion("this app's limits", open=False):
            gr.Markdown(explorer.describe_limits())
        if explorer.builtin:
            from ..builtin.scenes import GRAMMAR, vocabulary

            with gr.Accordion("the built-in model's words", open=False):
                gr.Markdown(f"Prompts follow a small grammar: `{GRAMMAR}`\n\nWords: {', '.join(vocabulary())}")
        for name, tab in TABS.items():
            with gr.Tab(name, id=name):
                gr.Markdown(tab.ABOUT)
                tab.layout(page)
    # one job at a time on the model (each tab's events share one concurrency slot); at most
    # `limits.queue` requests wait, and the page says "busy, try again" to the next one
    return app.queue(max_size=explorer.limits.queue, default_concurrency_limit=1)


def check_address(host: str, port: int) -> None:
    """Fail early, before a model loads, when the address cannot be served."""
    import socket

    if not 1 <= port <= 65535:
        raise ValueError(f"Port {port} is not a port number (1..65535).")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"Cannot serve on host {host!r}: {err.strerror}.") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(address)
        except OSError as err:
            raise ValueError(
                f"Cannot serve on {host}:{port} ({err.strerror}); give another --port (or --host)."
            ) from None


def serve(
    pipe: Any,
    model: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    quiet: bool = False,
    limits: Limits | None = None,
    clip: str | Path | None = None,
) -> None:
    """Build the page for `pipe` and serve it until interrupted (Ctrl+C); `clip`, a local
    CLIPModel folder, adds CLIP score and CLIP-I to the scores."""
    check_address(host, port)
    explorer = Explorer(pipe, model, limits, clip)
    app = build_app(explorer)
    app.launch(
        server_name=host,
        server_port=port,
        quiet=True,
        show_error=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        share=False,
        inbrowser=False,
        css=CSS,
        footer_links=[],
        max_file_size=f"{explorer.limits.upload_mb}mb",
        prevent_thread_lock=True,
    )
    if not quiet:  # only once it serves
        print(f"ditlens app: {explorer.describe()}", flush=True)
        print(f"ditlens app: open http://{host}:{port} in a browser (Ctrl+C stops it)", flush=True)
    app.block_thread()
