"""Every example of `ditlens COMMAND --help` (`ditlens.cli.EXAMPLES`), parsed and run against
the built-in model, so that an example that stops working fails here and not in a user's
terminal.

An example is a line that runs ditlens (`ditlens ...`, or `torchrun ... -m ditlens.cli ...`);
a trailing backslash continues it on the next line and `# ...` is a comment. Each example
runs in its help page's own working folder, after the examples above it on that page (a
later one may read what an earlier one wrote, e.g. transport's reference image). A file that
a page shows whole under a heading `NAME (...):` (generate's prompts.txt, sweep's
study.toml) is written there first, so the text a user copies is the file the test uses.

What the test adds for speed is in SPEED below; an example that cannot run here is skipped
with its reason, and still parsed by `build_parser().parse_args`.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from ditlens.cli import EXAMPLES, build_parser, main

#: the launcher of a line that runs ditlens under torchrun
TORCHRUN = re.compile(r"^torchrun\b.*?-m ditlens\.cli\s+")
#: a file shown whole on a help page: "NAME (note):" and its lines indented below it
FILE_BLOCK = re.compile(r"^(?P<name>[\w.-]+\.(?:txt|toml)) \(.*\):\n(?P<body>(?:  .*\n?)+)", re.MULTILINE)


@dataclass(frozen=True)
class Example:
    command: str  # the help page it is on
    number: int  # its place among the page's examples, from 1
    line: str  # as printed (continuations joined)
    argv: tuple[str, ...]  # what follows `ditlens` (or `-m ditlens.cli`)
    launcher: str | None  # e.g. "torchrun --nproc-per-node 4 -m ditlens.cli", None for plain `ditlens`

    @property
    def id(self) -> str:
        return f"{self.command}-{self.number}"


def page_examples(command: str, text: str) -> list[Example]:
    examples = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():  # a trailing backslash continues the line
        line = line.strip()
        launcher = TORCHRUN.match(line)
        if launcher:
            words, start = shlex.split(line[launcher.end() :], comments=True), launcher.group().strip()
        elif line.startswith("ditlens "):
            words, start = shlex.split(line, comments=True)[1:], None
        else:
            continue
        examples.append(Example(command, len(examples) + 1, line, tuple(words), start))
    return examples


def page_files(text: str) -> dict[str, str]:
    return {m["name"]: textwrap.dedent(m["body"]) for m in FILE_BLOCK.finditer(text)}


PAGES = {command: page_examples(command, text) for command, text in EXAMPLES.items()}
ALL = [example for examples in PAGES.values() for example in examples]


def test_every_help_page_has_examples():
    assert set(PAGES) == set(build_parser()._subparsers._group_actions[0].choices), (
        "a command without examples, or examples of no command"
    )
    assert all(PAGES.values()), [command for command, examples in PAGES.items() if not examples]


@pytest.mark.parametrize("example", ALL, ids=lambda e: e.id)
def test_example_parses(example: Example):
    args = build_parser().parse_args(list(example.argv))  # argparse exits (SystemExit 2) on a bad option
    assert args.command == example.command, f"{example.line!r} is on the help page of {example.command}"


# ---- what runs, and how fast -------------------------------------------------------------------

#: options the test appends when the example does not set them, so that the whole file runs in
#: about two minutes on a 2-core CPU (the built-in model's default is 8 steps with classifier-free
#: guidance: ~20 s for 4 images). Each one exists for its command; none changes what is checked:
#: that the example runs and writes its outputs.
#: --steps 1: one Euler step instead of 8 (raised where the example's own --step, --window or
#:            --windows needs more; see `steps_needed`)
#: --guidance 1: no classifier-free guidance, so only the conditional rows run (half the work)
#: --ks 1: disrupt's default k = 1 2 4 8 edits 20 conditions; one k keeps each rule once
#: --n 2: bench --quick on 2 prompts (pairs) instead of 16 (4), the fewest its scores allow
GENERATION = {"--steps": "1", "--guidance": "1"}
SPEED: dict[str, dict[str, str]] = {
    "generate": GENERATION,
    "find": GENERATION,
    "disrupt": {**GENERATION, "--ks": "1"},
    "segment": GENERATION,
    "transport": GENERATION,
    "interpolate": GENERATION,
    "bench": {"--n": "2"},
}


#: examples that run here but over the file's time budget (2 minutes) even with SPEED, with what
#: they took on a 2-core CPU; the same code runs in the examples that are kept
TOO_SLOW = {
    "demo-2": "the same run as demo-1 (~40 s, no option makes it faster) with another seed and folder",
    "bench-2": (
        "bench transport --quick takes ~95 s even with --n 2: "
        "--quick fixes its sweep over k, windows, masks and streams"
    ),
}


def skip_reason(example: Example, args: argparse.Namespace) -> str | None:
    if example.launcher:
        return f"needs a launcher with several processes ({example.launcher})"
    if getattr(args, "model", None) not in (None, "builtin"):
        return f"needs a real model (--model {args.model})"
    if example.command == "app":
        return "serves a web app until stopped (its arguments are checked by test_example_parses)"
    if example.command == "bench" and not args.quick:
        return "the full benchmark (no --quick): hours on a CPU" + (
            f", and --device {args.device}" if args.device != "cpu" else ""
        )
    if getattr(args, "device", "cpu") != "cpu":
        return f"needs --device {args.device}"
    return TOO_SLOW.get(example.id)


def steps_needed(args: argparse.Namespace) -> int:
    """The fewest steps that keep the example's own step, window and windows in the schedule."""
    stops = [1]
    if getattr(args, "step", None) is not None:
        stops.append(args.step + 1)
    if getattr(args, "window", None):
        stops.append(args.window[1])
    if getattr(args, "over", None) == "window":
        stops += [int(w.partition(":")[2]) for w in args.windows]
    return max(stops)


def fast_argv(example: Example, args: argparse.Namespace) -> list[str]:
    argv = list(example.argv)
    given = {word.split("=")[0] for word in argv if word.startswith("--")}
    for option, value in SPEED.get(example.command, {}).items():
        if option not in given:
            argv += [option, str(max(int(value), steps_needed(args))) if option == "--steps" else value]
    return argv + (["--quiet"] if "--quiet" not in given else [])


def outputs(example: Example, args: argparse.Namespace, files: dict[str, str]) -> list[str]:
    """The folder the example writes (its --out, else the command's default), and what its comment names."""
    if example.command == "bench":
        folder = args.out or f"runs/bench-{args.suite}"
    elif example.command == "sweep":
        import tomllib

        config = tomllib.loads(files[args.config]) if args.config in files else {}
        folder = args.out or config.get("out") or f"runs/sweep-{Path(args.config).stem}"
    else:
        folder = args.out
    named = [folder]
    if example.command == "sweep" and args.merge:
        named.append(f"{folder}/summary")  # "a figure in OUT/summary/"
    named += re.findall(r"\b(runs/\S+\.\w+)", example.line.partition("#")[2])  # e.g. "writes runs/demo/index.html"
    return named


@pytest.fixture(scope="session")
def pages(tmp_path_factory):
    """One working folder per help page, with the examples of that page that have run there."""
    return {command: (tmp_path_factory.mktemp(f"help-{command}"), {}) for command in PAGES}


def run_in(folder: Path, argv: list[str]) -> int:
    here = os.getcwd()
    os.chdir(folder)
    try:
        return main(argv)
    finally:
        os.chdir(here)


@pytest.mark.parametrize("example", ALL, ids=lambda e: e.id)
def test_example_runs(example: Example, pages, capsys):
    args = build_parser().parse_args(list(example.argv))
    reason = skip_reason(example, args)
    if reason:
        pytest.skip(reason)
    folder, done = pages[example.command]
    files = page_files(EXAMPLES[example.command])
    for name, text in files.items():
        if not (folder / name).exists():
            (folder / name).write_text(text)
    # the examples above this one on its page first (once each), for what they write
    for earlier in PAGES[example.command][: example.number]:
        earlier_args = build_parser().parse_args(list(earlier.argv))
        if earlier.id in done or skip_reason(earlier, earlier_args):
            continue
        done[earlier.id] = run_in(folder, fast_argv(earlier, earlier_args))
        if earlier is not example:
            assert done[earlier.id] == 0, f"{earlier.id}, which {example.id} follows, failed: {capsys.readouterr().err}"
    assert done[example.id] == 0, f"{example.line!r} exited {done[example.id]}: {capsys.readouterr().err}"
    for path in outputs(example, args, files):
        assert (folder / path).exists(), f"{example.line!r} did not write {path}"
        if (folder / path).is_dir():
            assert any((folder / path).iterdir()), f"{example.line!r} left {path} empty"
