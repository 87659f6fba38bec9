"""`ditlens app` under load: limits, a bounded queue, cancellation, bounded memory.

Fast and without a browser: the built-in model's `Explorer` is called directly, and the
page (`build_app`) is launched in this process and driven through `gradio_client`, so the
tests can count the transformer's calls. What they check:

- a request over a limit (steps = 200000, height = 100000 px, 1000 prompts, ...) is refused
  before the transformer runs once, with a message naming the field, the value and the range;
- after one, the next normal request is answered promptly (the original defect: 615 s);
- the queue refuses a request beyond its bound, at once;
- a cancel stops a long job between two denoising steps, and frees the worker;
- the segment tab keeps the last few results only; the limits are documented.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from ditlens.app import Cancelled, Explorer, Kept, Limits, build_app
from ditlens.disrupt import RULES as DISRUPT_RULES
from ditlens.generation import GenerationSettings
from ditlens.transport import TransportConfig

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a large red circle in the center on a gray background"
TARGET = "a large blue square in the center on a gray background"
LONG_STEPS = 200  # the most a request may ask: about a minute of the built-in model on a busy 2-core CPU
PROMPT_ANSWER_S = 30  # a normal find (2 steps, three plots) on a busy 2-core CPU takes 1-6 s; the defect took 615 s
REFUSAL_S = 5  # a refusal does no work: it is answered as fast as the server answers anything


@pytest.fixture(scope="module")
def explorer() -> Explorer:
    from ditlens.models import load_pipeline

    # queue = 1 so that the queue test fills it with two requests, kept = 1 so that two sessions'
    # segmentations overflow it; every other limit is the default
    return Explorer(load_pipeline(None), limits=Limits(queue=1, kept=1))


@pytest.fixture
def calls(explorer):
    """Times of the transformer's finished calls (one per step: the built-in model batches CFG)."""
    times: list[float] = []
    handle = explorer.adapter.transformer.register_forward_hook(lambda *_: times.append(time.monotonic()))
    yield times
    handle.remove()


def settings(steps: int | None = None, **kwargs) -> GenerationSettings:
    return GenerationSettings(num_inference_steps=steps, **kwargs)


# ---- limits: refused before any model runs --------------------------------------------------------


OVERSIZED = {
    # name: (call on the explorer, words the message must hold: field, value, range)
    "steps": (lambda e: e.find([PROMPT], [0], 2, "abs_mean", settings(200000)), ["steps", "200000", "1..200"]),
    "height": (
        lambda e: e.find([PROMPT], [0], 2, "abs_mean", settings(height=100000)),
        ["height", "100000", "1..2048"],
    ),
    "prompts": (lambda e: e.find([PROMPT] * 1000, [0], 2, "abs_mean", settings()), ["prompts", "1000", "1..16"]),
    "prompt length": (
        lambda e: e.segment([PROMPT, "a" * 5000], [0], 2, ["top"], "abs_mean", settings()),
        ["prompts, line 2", "5000 characters", "2000"],
    ),
    "seeds": (lambda e: e.find([PROMPT], list(range(17)), 2, "abs_mean", settings()), ["seeds", "17", "1..16"]),
    "seed value": (
        lambda e: e.find([PROMPT], [2**40], 2, "abs_mean", settings()),
        ["seeds", str(2**40), "0..4294967295"],
    ),
    "k": (lambda e: e.find([PROMPT], [0], 10**6, "abs_mean", settings()), ["k", "1000000", "1..256"]),
    "images": (
        lambda e: e.find([PROMPT] * 16, list(range(16)), 2, "abs_mean", settings()),
        ["images", "16 prompts x 16 seeds = 256", "64"],
    ),
    "images x steps": (
        lambda e: e.segment([PROMPT] * 16, [0], 2, ["top"], "abs_mean", settings(200)),
        ["images x steps", "16 x 200 = 3200", "2048"],
    ),
    "disrupt conditions": (
        # 1 + 4 ks x (top, bottom, 5 random draws) = 29 conditions, each of 3 seeds
        lambda e: e.disrupt([PROMPT], [0, 1, 2], [1, 2, 4, 8], list(DISRUPT_RULES), 0.0, 5, "abs_mean", settings()),
        ["images", "1 prompt x 3 seeds x 29 conditions = 87", "64"],
    ),
    "disrupt k": (
        lambda e: e.disrupt([PROMPT], [0], [10**6], ["top"], 0.0, 1, "abs_mean", settings()),
        ["k", "1000000", "1..256"],
    ),
    "transport steps": (
        lambda e: e.transport(TARGET, TransportConfig(k=2, generation=settings(200000)), source=PROMPT),
        ["steps", "200000", "1..200"],
    ),
    "transport seed": (
        lambda e: e.transport(TARGET, TransportConfig(k=2), source=PROMPT, source_seed=-1),
        ["source seed", "-1", "0..4294967295"],
    ),
    "transport prompt length": (
        lambda e: e.transport("b" * 3000, TransportConfig(k=2), source=PROMPT),
        ["target prompt", "3000 characters", "2000"],
    ),
}


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_an_oversized_request_is_refused_before_any_model_runs(explorer, calls, name):
    request, words = OVERSIZED[name]
    started = time.perf_counter()
    with pytest.raises(ValueError) as refused:
        request(explorer)
    message = str(refused.value)
    assert all(w in message for w in words), (words, message)
    assert calls == [], f"the transformer ran {len(calls)} times before the refusal"
    assert time.perf_counter() - started < 1.0


def test_a_reference_image_is_measured_before_it_is_decoded(explorer, calls, tmp_path):
    big = tmp_path / "big.png"  # 72 megapixels: over 8192 x 8192; mode "1" keeps it small to write
    Image.new("1", (9000, 8000)).save(big)
    bomb = tmp_path / "bomb.png"  # 200 megapixels: PIL refuses to open it at all
    Image.new("1", (20000, 10000)).save(bomb)
    for path, words in (
        (big, ["reference image", "8000 x 9000", "8192 x 8192"]),
        (bomb, ["reference image", "8192 x 8192"]),
    ):
        with pytest.raises(ValueError) as refused:
            explorer.transport(TARGET, TransportConfig(k=2), reference=path)
        assert all(w in str(refused.value) for w in words), str(refused.value)
    assert calls == []


def test_limits_are_whole_numbers_of_at_least_one():
    with pytest.raises(ValueError, match=r"steps = 0.*queue = -1"):
        Limits(steps=0, queue=-1)


def test_every_limit_is_documented_with_its_default():
    """docs/app.md has one table row per `Limits` field, with its default value."""
    from dataclasses import fields

    text = (REPO / "docs" / "app.md").read_text()
    for f in fields(Limits):
        row = re.search(rf"^\| `{f.name}` \| ([^|]+) \|", text, re.MULTILINE)
        assert row, f"docs/app.md has no row for Limits.{f.name}"
        assert str(f.default) in row.group(1).replace(",", ""), (f.name, f.default, row.group(1))


# ---- cancellation, in the explorer ------------------------------------------------------------------


def test_a_cancel_stops_a_long_job_between_steps(explorer, calls):
    transformer = explorer.adapter.transformer
    pre_hooks = len(transformer._forward_pre_hooks)
    cancel, cancelled_at = threading.Event(), []

    def cancel_after_two_steps(*_):  # runs after `calls` counted this call
        if len(calls) == 2:
            cancelled_at.append(time.monotonic())
            cancel.set()

    handle = transformer.register_forward_hook(cancel_after_two_steps)
    try:
        with pytest.raises(Cancelled):
            explorer.find([PROMPT], [0], 2, "abs_mean", settings(LONG_STEPS), cancel=cancel)
        returned = time.monotonic()
    finally:
        handle.remove()
    assert len(calls) == 2, f"{len(calls)} of {LONG_STEPS} steps ran; the cancel came after step 2"
    step_s = calls[1] - calls[0]
    # it stopped at once, not after the remaining 198 steps (~198 x step_s)
    assert returned - cancelled_at[0] < max(2.0, 5 * step_s), (returned - cancelled_at[0], step_s)
    assert len(transformer._forward_pre_hooks) == pre_hooks, "the cancellation hook outlived its job"

    # a cancel set before the job starts (while it waited for the model): nothing runs
    already = threading.Event()
    already.set()
    with pytest.raises(Cancelled):
        explorer.find([PROMPT], [0], 2, "abs_mean", settings(2), cancel=already)
    assert len(calls) == 2


def test_one_job_holds_the_model_at_a_time(explorer):
    entered = threading.Event()

    def second():
        with explorer.job():
            entered.set()

    with explorer.job(threading.Event()):
        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.3), "a second job got the model while the first held it"
    thread.join(5)
    assert entered.is_set()


def test_kept_results_are_bounded():
    kept = Kept(2)
    keys = [kept.put(f"result {i}") for i in range(3)]
    assert kept.get(keys[0]) is None  # the oldest is dropped, not kept for ever
    assert [kept.get(k) for k in keys[1:]] == ["result 1", "result 2"]
    assert kept.get(None) is None and kept.get("no such key") is None


# ---- the page, launched in this process and driven through gradio_client ----------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(explorer, tmp_path_factory):
    """(the app, a gradio_client.Client on it)."""
    gradio_client = pytest.importorskip("gradio_client")
    tmp = tmp_path_factory.mktemp("app-limits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio"))
        app = build_app(explorer)
        port = free_port()
        app.launch(
            server_name="127.0.0.1",
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            ssr_mode=False,
            show_error=False,
        )
        try:
            yield app, gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        finally:
            app.close()


def find_inputs(steps: int, prompts: str = PROMPT) -> tuple:
    """The find tab's inputs in the page's order: prompts, seeds, k, statistic, site, step, steps, guidance."""
    return (prompts, "0", 2, "abs_mean", "single_transformer_blocks.1", 0, steps, -1)


def test_the_next_request_is_answered_promptly_after_an_oversized_one(page, calls):
    _, client = page
    for steps, prompts, words in (
        (200000, PROMPT, ["steps = 200000", "1..200"]),
        (0, "\n".join([PROMPT] * 1000), ["prompts: 1000 given", "1..16"]),
    ):
        started = time.perf_counter()
        status = client.predict(*find_inputs(steps, prompts), api_name="/find")[-1]
        assert time.perf_counter() - started < REFUSAL_S
        assert "Error:" in status and all(w in status for w in words), status
        assert "Traceback" not in status
    assert calls == []

    started = time.perf_counter()
    status = client.predict(*find_inputs(2), api_name="/find")[-1]
    took = time.perf_counter() - started
    assert "Done:" in status, status
    assert took < PROMPT_ANSWER_S, f"the normal request after the oversized ones took {took:.1f} s"
    assert len(calls) == 2
    print(f"test_app_limits: a normal 2-step find after two refusals took {took:.1f} s")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def test_the_queue_is_bounded_and_a_cancel_frees_the_worker(page, calls):
    from gradio_client.utils import QueueError, Status

    _, client = page
    # 1. a long job runs, one request waits (Limits(queue=1)), and the next is refused at once
    long = client.submit(*find_inputs(LONG_STEPS), api_name="/find")
    wait_for(lambda: len(calls) >= 2, 60, "the long job's first steps")
    waiting = client.submit(*find_inputs(2), api_name="/find")
    wait_for(lambda: waiting.status().code == Status.IN_QUEUE, 10, "the second request to wait in the queue")
    extra = client.submit(*find_inputs(2), api_name="/find")
    started = time.perf_counter()
    with pytest.raises(QueueError, match="Queue is full"):
        extra.result(timeout=REFUSAL_S * 4)
    assert time.perf_counter() - started < REFUSAL_S

    # 2. cancel the long job: it stops at its next step, and the waiting request is answered promptly
    at_cancel = len(calls)
    long.cancel()
    started = time.perf_counter()
    status = waiting.result(timeout=PROMPT_ANSWER_S * 2)[-1]
    took = time.perf_counter() - started
    assert "Done:" in status, status
    assert took < PROMPT_ANSWER_S, f"the waiting request took {took:.1f} s after the cancel"
    long_steps = len(calls) - 2  # the waiting request ran 2 steps after it
    # the cancel reaches the job's flag through Gradio's event loop, so on a busy machine a step
    # or a few may still run; what matters is that the job stops long before its 200 steps
    assert long_steps < LONG_STEPS // 10, f"the cancelled job ran on: {long_steps} steps, {at_cancel} at the cancel"
    assert long.status().code == Status.CANCELLED
    print(f"test_app_limits: cancelled after {long_steps} of {LONG_STEPS} steps; the next request took {took:.1f} s")


def test_the_server_keeps_the_last_segmentations_only(page):
    """Two sessions segment; with Limits(kept=1) the first one's masks are dropped, and its
    pickers say so instead of drawing another session's masks."""
    from gradio_client import Client

    _, client = page
    other = Client(client.src, verbose=False, download_files=False)  # a second session
    inputs = (PROMPT, "0", 2, ["top"], "border", "abs_mean", 2, -1, "single_transformer_blocks.1")
    pick = ("transformer_blocks.0", 1)
    assert "Done:" in client.predict(*inputs, api_name="/segment")[-1]
    assert "masks at transformer_blocks.0, step 1" in client.predict(*pick, api_name="/pick")[-1]
    assert "Run a segmentation first" in other.predict(*pick, api_name="/pick")[-1]
    assert "Done:" in other.predict(*inputs, api_name="/segment")[-1]
    assert "no longer kept" in client.predict(*pick, api_name="/pick")[-1]
    assert "masks at transformer_blocks.0, step 1" in other.predict(*pick, api_name="/pick")[-1]


def test_each_stop_button_cancels_its_tab_unqueued(page):
    """What the browser does on Stop: the button's event cancels the run event, outside the queue."""
    app, _ = page
    config = app.get_config_file()
    elem_ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    dependencies = config["dependencies"]

    def triggered_by(elem_id: str) -> list[dict]:
        return [d for d in dependencies if any(elem_ids.get(target) == elem_id for target, _ in d["targets"])]

    for tab in ("find", "disrupt", "segment", "transport"):
        [run] = triggered_by(f"{tab}-run")
        assert run["api_name"] == tab and run["queue"] is not False
        stops = triggered_by(f"{tab}-stop")
        assert stops and all(d["queue"] is False for d in stops), stops
        assert [run["id"]] in [d["cancels"] for d in stops], stops


def test_every_tab_answers_with_its_scores_and_a_zip_of_its_commands_files(page):
    """What the page sends back after a run: the status, the score table the command reports
    and a zip of the command's files, command.txt first among them."""
    import zipfile

    _, client = page
    settings = (2, -1)  # steps, guidance
    requests = {
        "find": (find_inputs(2), "find", "site"),
        "disrupt": (
            (f"{PROMPT}\n{TARGET}", "0", [1], ["top"], 0, 1, "abs_mean", 0, 0, *settings),
            "disrupt",
            "objects fully correct",
        ),
        "segment": (
            (f"{PROMPT}\n{TARGET}", "0", 2, ["top"], "border", "abs_mean", *settings, "single_transformer_blocks.1"),
            "segment",
            "mIoU at the best site",
        ),
        "transport": (
            (
                "two prompts",
                PROMPT,
                None,
                "",
                TARGET,
                0.75,
                False,
                64,
                "source",
                "border",
                "txt",
                "abs_mean",
                0,
                0,
                0,
                1,
                *settings,
            ),
            "transport",
            "colour moved",
        ),
    }
    for tab, (inputs, command, column) in requests.items():
        outputs = client.predict(*inputs, api_name=f"/{tab}")
        status, download = outputs[-1], outputs[-2]
        assert "Done:" in status or "Degenerate:" in status, (tab, status)
        tables = [o for o in outputs if isinstance(o, dict) and "headers" in o]
        assert tables and column in tables[-1]["headers"], (tab, tables)
        with zipfile.ZipFile(download["path"] if isinstance(download, dict) else download) as archive:
            names = archive.namelist()
            [command_txt] = [n for n in names if n.endswith("/command.txt")]
            assert archive.read(command_txt).decode().startswith(f"ditlens {command} "), (tab, names)
            assert any(n.endswith("/.ditlens-output") for n in names), names  # the CLI's list of its files
