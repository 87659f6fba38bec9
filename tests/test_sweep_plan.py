"""A sweep checks its whole plan before any model loads: each bad prompt or generation setting
stops `ditlens sweep CONFIG` with exit code 2 and one line naming the config key, the value
(cut when long) and what is allowed; no traceback, no output folder, the pipeline never loaded.
A config saved with a UTF-8 byte-order mark is read as without it."""

from __future__ import annotations

from pathlib import Path

import pytest

import ditlens.models
from ditlens.cli import main
from ditlens.sweep import MAX_SIDE, load_config, plan

PROMPT = "a large red circle in the center on a gray background"
FIND = '[[jobs]]\ncommand = "find"\nk = 2\n'
LONG = "a large red dog" + " on the left" * 20  # an unknown word in a prompt of 255 characters


@pytest.fixture
def never_loads(monkeypatch):
    """The sweep must stop before any pipeline loads (run_sweep imports load_pipeline from here)."""

    def load_pipeline(*args, **kwargs):
        raise AssertionError("the pipeline was loaded: the plan was not checked first")

    monkeypatch.setattr(ditlens.models, "load_pipeline", load_pipeline)


def sweep(tmp_path: Path, capsys, data: bytes | str, name: str = "sweep.toml") -> str:
    """Run `ditlens sweep` on this config; return its one-line error (exit code 2 asserted)."""
    config = tmp_path / name
    config.write_bytes(data.encode() if isinstance(data, str) else data)
    out = tmp_path / "out"
    code = main(["sweep", str(config), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err and not captured.out, captured
    head = "ditlens sweep: error: "
    assert captured.err.startswith(head) and captured.err.count("\n") == 1, captured.err
    assert not out.exists(), "nothing is written before the plan checks out"
    return captured.err[len(head) :].strip()


# (id, config text, what the message must say): the built-in model (no [model] table)
CASES = [
    ("prompts-empty-list", "prompts = []\n" + FIND, ["'prompts' gives no prompt ([])", "leave 'prompts' out"]),
    ("prompts-table-empty-list", "[prompts]\nlist = []\n" + FIND, ["'prompts' gives no prompt", "{'list': []}"]),
    ("prompt-empty", 'prompts = [""]\n' + FIND, ["'prompts[0]' is an empty prompt ('')", "at least one word"]),
    ("prompt-whitespace", f'prompts = ["{PROMPT}", "  \\t "]\n' + FIND, ["'prompts[1]' is an empty prompt ('  \\t ')"]),
    ("prompt-not-a-string", "prompts = [3]\n" + FIND, ["'prompts[0]' must be a prompt (a string); got 3"]),
    ("prompt-twice", f'prompts = ["{PROMPT}", "{PROMPT} "]\n' + FIND, ["is listed twice (prompts[0] and prompts[1])"]),
    (
        "builtin-unknown-word",
        'prompts = ["a large red dog on the left on a gray background"]\n' + FIND,
        ["prompts[0]: Unknown word 'dog'", "The built-in model knows:"],
    ),
    (
        "builtin-unknown-word-long-prompt",
        f'prompts = ["{LONG}"]\n' + FIND,
        ["prompts[0]: Unknown word 'dog' in prompt 'a large red dog on the left", "... (255 characters)"],
    ),
    (
        "builtin-not-a-caption",
        'prompts = ["red large circle"]\n[[jobs]]\ncommand = "disrupt"\nrule = "top"\nk = 1\n',
        ["prompts[0]: Expected 'a' at word 1 of prompt 'red large circle'", "score the built-in model's images"],
    ),
    (
        "builtin-target-unknown-word",
        f'prompts = ["{PROMPT}"]\n[[jobs]]\ncommand = "transport"\ntarget = "a large red dog"\n',
        ["jobs[0] (transport) setting 'target': Unknown word 'dog'"],
    ),
    (
        "target-empty",
        f'prompts = ["{PROMPT}"]\n[[jobs]]\ncommand = "transport"\ntarget = " "\n',
        ["jobs[0] (transport) setting 'target' is an empty prompt (' ')"],
    ),
    (
        "height-huge",
        "[generation]\nheight = 100000\n" + FIND,
        [f"'generation.height' must be from 1 to {MAX_SIDE} pixels", "got 100000"],
    ),
    (
        "width-zero",
        "[generation]\nwidth = 0\n" + FIND,
        ["'generation.width' must be from 1 to", "pixels", "got 0"],
    ),
    ("height-negative", "[generation]\nheight = -32\n" + FIND, ["'generation.height'", "got -32"]),
    (
        "height-not-an-integer",
        "[generation]\nheight = 32.5\n" + FIND,
        ["'generation.height' must be an integer", "got 32.5"],
    ),
    (
        "steps-zero",
        "[generation]\nsteps = 0\n" + FIND,
        ["'generation.steps' must be a whole number from 1 to 1000; got 0"],
    ),
    (
        "steps-negative",
        "[generation]\nsteps = -3\n" + FIND,
        ["'generation.steps' must be a whole number from 1 to 1000; got -3"],
    ),
    (
        "guidance-nan",
        "[generation]\nguidance = nan\n" + FIND,
        ["'generation.guidance' must be a finite number; got nan"],
    ),
    (
        "guidance-inf",
        "[generation]\nguidance = inf\n" + FIND,
        ["'generation.guidance' must be a finite number; got inf"],
    ),
    (
        "guidance-negative",
        "[generation]\nguidance = -1.5\n" + FIND,
        ["'generation.guidance' must be a finite number >= 0; got -1.5"],
    ),
]


@pytest.mark.parametrize("case_id, text, says", [pytest.param(*c, id=c[0]) for c in CASES])
def test_a_bad_plan_stops_before_the_model_loads(case_id, text, says, tmp_path, capsys, never_loads):
    message = sweep(tmp_path, capsys, text)
    assert message.startswith(f"Sweep config {str(tmp_path / 'sweep.toml')!r}: "), message
    for part in says:
        assert part in message, message


def test_a_long_value_is_cut_in_the_message(tmp_path, capsys, never_loads):
    message = sweep(tmp_path, capsys, f'prompts = ["{LONG}"]\n' + FIND)
    assert LONG.strip() not in message and len(message) < len(LONG) + 400, message


def test_a_prompts_file_with_no_prompt(tmp_path, capsys, never_loads):
    (tmp_path / "prompts.txt").write_text("\n   \n\n")
    message = sweep(tmp_path, capsys, '[prompts]\nfile = "prompts.txt"\n' + FIND)
    assert "'prompts' gives no prompt ({'file': 'prompts.txt'})" in message, message


def test_a_prompts_file_names_the_line(tmp_path, capsys, never_loads):
    (tmp_path / "prompts.txt").write_text(f"{PROMPT}\n\na large red dog on the left on a gray background\n")
    message = sweep(tmp_path, capsys, '[prompts]\nfile = "prompts.txt"\n' + FIND)
    assert "prompts.file 'prompts.txt' line 3: Unknown word 'dog'" in message, message


def test_a_config_that_is_not_utf8(tmp_path, capsys, never_loads):
    text = f'prompts = ["{PROMPT}"]  # caf\u00e9\n' + FIND
    message = sweep(tmp_path, capsys, text.encode("latin-1"))
    offset = text.index("\u00e9")
    assert message == (
        f"Sweep config {str(tmp_path / 'sweep.toml')!r}: not UTF-8 text: byte 0xe9 at offset {offset} "
        "is not valid UTF-8. Save the file as UTF-8."
    ), message


def test_a_config_saved_as_utf16(tmp_path, capsys, never_loads):
    message = sweep(tmp_path, capsys, (f'prompts = ["{PROMPT}"]\n' + FIND).encode("utf-16"))
    assert "not UTF-8 text (it starts with a UTF-16 byte-order mark)" in message and "sweep.toml" in message, message


def test_a_prompts_file_that_is_not_utf8(tmp_path, capsys, never_loads):
    (tmp_path / "prompts.txt").write_bytes(f"{PROMPT}\nna\u00efve\n".encode("latin-1"))
    message = sweep(tmp_path, capsys, '[prompts]\nfile = "prompts.txt"\n' + FIND)
    assert (
        f"Prompts file {str(tmp_path / 'prompts.txt')!r} (prompts.file in sweep.toml): not UTF-8 text: byte 0xef"
        in message
    ), message


@pytest.mark.parametrize(
    "name, text",
    [
        ("sweep.toml", f'seeds = [0, 1]\nprompts = ["{PROMPT}"]\n[generation]\nsteps = 2\n' + FIND),
        (
            "sweep.yaml",
            f"seeds: [0, 1]\nprompts: ['{PROMPT}']\ngeneration: {{steps: 2}}\njobs: [{{command: find, k: 2}}]\n",
        ),
    ],
)
def test_a_byte_order_mark_is_read_as_without_it(name, text, tmp_path):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    (tmp_path / "plain" / name).write_text(text, encoding="utf-8")
    (tmp_path / "bom" / name).write_text(text, encoding="utf-8-sig")  # EF BB BF first, as Windows Notepad saves
    assert (tmp_path / "bom" / name).read_bytes().startswith(b"\xef\xbb\xbf")
    plain, bom = load_config(tmp_path / "plain" / name), load_config(tmp_path / "bom" / name)
    assert bom.prompts == plain.prompts == [PROMPT] and bom.seeds == [0, 1]
    assert [i.id for i in plan(bom)] == [i.id for i in plan(plain)]


def test_job_settings_are_the_capability_config_fields():
    """Every field of a capability's config is a sweep setting, one the sweep sets itself, or
    left out with a reason; a field added to a config is a setting with no edit in the sweep."""
    from dataclasses import dataclass, fields, replace

    from ditlens.generation import GenerationSettings
    from ditlens.segment import SegmentConfig
    from ditlens.sweep.jobs import JOBS, SWEEP_OWNED, Setting

    for job in JOBS.values():
        offered = {job.renamed.get(f.name, f.name) for f in fields(job.config) if f.name not in SWEEP_OWNED}
        assert set(job.settings) == (offered - {job.renamed.get(f, f) for f in job.left_out}) | set(job.own)
        assert all(reason for reason in job.left_out.values())

    @dataclass
    class WithAKnob(SegmentConfig):
        knob: float = 0.5

    job = replace(JOBS["segment"], config=WithAKnob)
    assert job.settings["knob"] == Setting("float", 0.5)
    built = job.build({"k": 2, "rules": ["top"], "knob": 0.25}, GenerationSettings(3), "a prompt", 7)
    assert (built.knob, built.k, built.rules, built.prompts, built.seeds) == (0.25, 2, ["top"], ["a prompt"], [7])
    assert built.generation == GenerationSettings(3)


def test_an_item_builds_the_config_its_settings_name(tmp_path):
    """Each item's settings become its capability's config: renamed fields, one k and rule per
    disrupt item, windows and sites as the config's tuples, the sweep's generation settings."""
    from ditlens.generation import GenerationSettings
    from ditlens.sweep.jobs import JOBS

    text = (
        f'seeds = [3]\nprompts = ["{PROMPT}"]\n'
        '[[jobs]]\ncommand = "find"\nk = 2\n'
        '[[jobs]]\ncommand = "disrupt"\nrule = "random"\nk = 2\ndraws = 1\nwindow = [0, 1]\nfactor = 0.5\n'
        '[[jobs]]\ncommand = "transport"\nk = 8\nalpha = 0.5\nsites = ["transformer_blocks.0"]\n'
        f'target = "{PROMPT.replace("red", "blue")}"\n'
    )
    (tmp_path / "sweep.toml").write_text(text)
    items = {i.command: i for i in plan(load_config(tmp_path / "sweep.toml")) if i.settings.get("rule") != "none"}
    generation = GenerationSettings(2, 3.5)
    find = JOBS["find"].build(items["find"].settings, generation, PROMPT, 3)
    assert (find.k, find.prompts, find.seeds) == (2, [PROMPT], [3])
    assert (find.generation.num_inference_steps, find.generation.guidance_scale) == (2, 3.5)
    disrupt = JOBS["disrupt"].build(items["disrupt"].settings, generation, PROMPT, 3)
    assert (disrupt.ks, disrupt.rules, disrupt.step_window, disrupt.factor) == ([2], ["random"], (0, 1), 0.5)
    transport = JOBS["transport"].build(items["transport"].settings, generation)
    assert (transport.k, transport.alpha, transport.sites, transport.step_window) == (
        8,
        0.5,
        ("transformer_blocks.0",),
        None,
    )
    assert transport.generation == generation
