"""Reading a train.log back: the loss lines, and the two plateau readings by hand."""

from __future__ import annotations

import math

import pytest

from ditlens.builtin.train_log import (
    at_plateau,
    constant_rate,
    doubling_change,
    finished,
    logged_losses,
    window_change,
)


def _log(lines: list[tuple[int, float, float]]) -> str:
    """train.py's format: a config line, then `step N  loss L  lr R  S steps/s  T s` lines."""
    body = [f"step {step:6d}  loss {loss:.6f}  lr {lr:.2e}  9.00 steps/s  {step // 10} s" for step, loss, lr in lines]
    return "\n".join(["Config: {}", "device: cpu", *body, "trained 3250 steps in 325 s (10.00 steps/s)"])


#: warm-up to step 500, the peak rate to 3,000, then the decay
LINES = [
    (250, 0.5, 1.5e-4),
    (500, 0.1, 3e-4),
    (1000, 0.05, 3e-4),
    (2000, 0.04, 3e-4),
    (2500, 0.035, 3e-4),
    (3000, 0.03, 3e-4),
    (3250, 0.02, 1.5e-4),
]


def test_the_loss_lines_are_read_in_order():
    losses = logged_losses(_log(LINES))
    assert [(line.step, line.loss, line.lr) for line in losses] == LINES
    assert [line.step for line in constant_rate(losses, warmup_steps=500)] == [500, 1000, 2000, 2500, 3000]
    assert finished(_log(LINES)) == (3250, 325)
    assert finished(_log(LINES).rsplit("\n", 1)[0]) is None  # stopped for a later chunk: no `trained` line


def test_the_window_change_by_hand():
    """The change is read from 2,000 to 3,000 (the last peak-rate line and the one 1,000 steps
    before), never across the decay."""
    change = window_change(logged_losses(_log(LINES)), warmup_steps=500)
    assert change is not None
    assert (change.first_step, change.last_step) == (2000, 3000)
    assert change.relative == pytest.approx(0.03 / 0.04 - 1, abs=1e-12)
    assert window_change(logged_losses(_log(LINES)), warmup_steps=2500) is None  # no 1,000-step window


def _curve(loss_of_step) -> list[tuple[int, float, float]]:
    """Peak rate from step 500 to 8,000 every 250 steps, then two decay lines that must not count."""
    lines = [(step, loss_of_step(step), 3e-4) for step in range(500, 8001, 250)]
    return lines + [(8250, loss_of_step(8250) / 2, 1e-4), (8500, loss_of_step(8500) / 4, 5e-5)]


def test_the_doubling_change_of_a_power_law_is_its_exponent():
    """loss = step**-0.5 loses 1 - 2**-0.5 = 29.3 % per doubling, wherever the run stops; the
    fit spans the second half of the constant phase (4,000 to 8,000)."""
    change = doubling_change(logged_losses(_log(_curve(lambda s: s**-0.5))), warmup_steps=500)
    assert change is not None
    assert (change.first_step, change.last_step) == (4000, 8000)
    assert change.relative == pytest.approx(2**-0.5 - 1, abs=1e-4)  # the log rounds losses to 6 digits


def test_a_loss_at_its_floor_reads_near_zero_and_a_flat_window_does_not_decide_alone():
    """A loss that has levelled off (0.02 + a term that has died out by step 4,000) reads near
    0 per doubling; a power law reads the same per doubling at every length, while its change
    over a fixed 1,000-step window shrinks as the run gets longer."""
    levelled = doubling_change(logged_losses(_log(_curve(lambda s: 0.02 + 0.5 * math.exp(-s / 400)))), 500)
    assert levelled is not None and abs(levelled.relative) < 0.001 and at_plateau(levelled)
    power = logged_losses(_log(_curve(lambda s: s**-0.5)))
    short = [line for line in power if line.step <= 4000]
    assert doubling_change(short, 500).relative == pytest.approx(doubling_change(power, 500).relative, abs=1e-3)
    assert abs(window_change(power, 500).relative) < abs(window_change(short, 500).relative)
    assert not at_plateau(doubling_change(power, 500))
    # the bar: 2 % per doubling (loss = step**-0.02 reads -1.4 %, step**-0.04 -2.7 %)
    assert at_plateau(doubling_change(logged_losses(_log(_curve(lambda s: s**-0.02))), 500))
    assert not at_plateau(doubling_change(logged_losses(_log(_curve(lambda s: s**-0.04))), 500))


def test_too_short_a_constant_phase_has_no_reading():
    assert doubling_change(logged_losses(_log(LINES[:3])), warmup_steps=500) is None
    assert doubling_change([], warmup_steps=500) is None and window_change([], warmup_steps=500) is None
