"""The named choices of ditlens' options and the defaults picked among them by measurement.

Plain Python, no torch: the command line builds its parser (and answers `--help`) from
these without loading torch or diffusers. The modules that act on a choice import it from
here: masks.py (foreground rules), transport.py (mask origins, streams, reference paths).
The capabilities' defaults, with their reasons, are on their configs (config.py).
"""

from __future__ import annotations

#: the channel statistic that ranks channels unless a caller picks another: the paper's
#: |mean over tokens| (`ditlens.core.record.STATISTICS` lists the others)
DEFAULT_STATISTIC = "abs_mean"

#: which K = 2 cluster is named the subject
FOREGROUND_RULES = {
    "border": "the cluster holding fewer of the image-border tokens (the usual background prior; ties: the smaller)",
    "smaller": "the smaller cluster",
    "high": "the cluster with the higher mean summed normalised value",
    "low": "the cluster with the lower mean summed normalised value",
}
# Chosen by `ditlens bench findings --device cuda` (commit a045246, docs/segment.md): on top-2
# masks of 33 held-out one-colour-background images, over every step and block, `border` named
# the better labelling (the oracle's) in 0.994 of images, `smaller` 0.991, `low` 0.667, `high` 0.333.
DEFAULT_FOREGROUND = "border"

#: where transport's spatial mask comes from
MASK_ORIGINS = ("source", "target", "union", "all", "user")
#: how the reference reaches each step's noise level in image-conditioned transport
REFERENCE_PATHS = {
    "renoise": "the reference mixed with fixed noise at each step's sigma (no model call)",
    "invert": "the reference carried up the flow ODE by Euler steps (one extra generation's cost)",
}
#: which streams transport moves
STREAMS = {
    "img": "the image tokens' top-k channels, under the spatial mask (the paper's figures)",
    "txt": "the text tokens' own top-k channels, every text token (blocks without a text stream: none)",
    "both": "both of the above",
}
#: where transport selects its k channels
CHANNELS_FROM = ("source", "union", "target")


def check_foreground(rule: str) -> None:
    if rule not in FOREGROUND_RULES:
        raise ValueError(f"Unknown foreground rule {rule!r}. Allowed: {', '.join(FOREGROUND_RULES)}.")


def check_streams(streams: str) -> None:
    if streams not in STREAMS:
        raise ValueError(f"Unknown streams {streams!r}. Allowed: {', '.join(STREAMS)}.")
