"""Reading a training run's `train.log` back (the lines `train.py` writes): its logged losses
and how far the loss was from flat before the rate decay, the ladder's plateau test.

A run "has reached its plateau" when the loss no longer falls at the constant peak rate. Two
readings of that, both over the steps logged at the peak rate after the warm-up:

- `window_change`: the relative change over the last `window` steps (1,000 by default), a
  figure in steps, so it favours long runs;
- `doubling_change`: the relative change per doubling of the step count, from a least-squares
  line through log(loss) against log(step) over the second half of that phase. It does not
  depend on the run's length: a power law, a straight line on log-log axes, keeps its figure
  however long it runs, and only a loss that levels off brings it towards 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: a run is at its plateau when its loss changes by less than this per doubling of its steps:
#: doubling the training would then buy under 2 % of the loss. Set before any run met it (the
#: ladder's runs read -16 to -33 %, the CPU control of a model too small for the data -6.5 %)
PLATEAU_PER_DOUBLING = 0.02


@dataclass(frozen=True)
class LossLine:
    step: int
    loss: float  # the mean loss of the steps since the previous line
    lr: float


@dataclass(frozen=True)
class Change:
    first_step: int
    last_step: int
    relative: float  # loss at last_step / loss at first_step - 1 (per doubling: the fitted figure)


def logged_losses(log: str) -> list[LossLine]:
    """Each `step N  loss L  lr R` line of a train.log, in order."""
    pattern = r"^step +(\d+) +loss ([\d.]+) +lr ([\d.e+-]+)"
    return [LossLine(int(a), float(b), float(c)) for a, b, c in re.findall(pattern, log, flags=re.MULTILINE)]


def finished(log: str) -> tuple[int, int] | None:
    """(steps, seconds) of the run's last `trained N steps in S s` line; None while it has none
    (a run still going, or stopped for a later chunk)."""
    done = re.findall(r"^trained (\d+) steps in (\d+) s", log, flags=re.MULTILINE)
    return (int(done[-1][0]), int(done[-1][1])) if done else None


def constant_rate(losses: list[LossLine], warmup_steps: int) -> list[LossLine]:
    """The lines logged at the run's peak rate, after its warm-up (before the decay)."""
    if not losses:
        return []
    peak = max(line.lr for line in losses)
    return [line for line in losses if line.lr == peak and line.step >= warmup_steps]


def window_change(losses: list[LossLine], warmup_steps: int, window: int = 1000) -> Change | None:
    """The loss's relative change over the last `window` steps at the peak rate; None where
    the log has no such window."""
    flat = constant_rate(losses, warmup_steps)
    if not flat:
        return None
    end = flat[-1]
    begin = [line for line in flat if line.step <= end.step - window]
    if not begin:
        return None
    return Change(begin[-1].step, end.step, end.loss / begin[-1].loss - 1)


def doubling_change(losses: list[LossLine], warmup_steps: int) -> Change | None:
    """The loss's relative change per doubling of the step count over the second half of the
    constant-rate phase (steps from half its last step on): 2**slope - 1, with `slope` the
    least-squares slope of log(loss) on log(step). None where fewer than 3 lines fall there."""
    flat = constant_rate(losses, warmup_steps)
    if not flat:
        return None
    half = [line for line in flat if line.step >= flat[-1].step / 2]
    if len(half) < 3:
        return None
    xs = [math.log(line.step) for line in half]
    ys = [math.log(line.loss) for line in half]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return Change(half[0].step, half[-1].step, 2**slope - 1)


def at_plateau(doubling: Change) -> bool:
    """Whether a per-doubling reading (`doubling_change`) is within PLATEAU_PER_DOUBLING of flat."""
    return abs(doubling.relative) < PLATEAU_PER_DOUBLING
