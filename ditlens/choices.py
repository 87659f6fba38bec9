"""The named choices of ditlens' options and the defaults picked among them by measurement.

Plain Python, no torch: the command line builds its parser (and answers `--help`) from
these without loading torch or diffusers. The modules that act on a choice import it from
here: masks.py (foreground rules), transport.py (mask origins, streams, reference paths and
its defaults).
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

# Transport's defaults: the choice of `ditlens bench transport --device cuda --n 32` on the
# built-in model (commits 953c2e1 and 5f57d7a, docs/transport.md), scored by clean transfer x
# layout kept (x (1 - ghosting)). Every setting scores low there: the best, the text stream's
# top-64 channels in steps [4, 8) of 8, moved the source's colour in 5 of 32 pairs (score
# 0.061, ghosting 0.20); copying more of the image stream moved more but drew noise (k = 256:
# ghosting 0.93). The window is not a default: step indices belong to one schedule (a 4-step
# FLUX.1 [schnell] has no step 4); pass `steps` to restrict.
TRANSPORT_K = 64  # channels moved per site and step
TRANSPORT_MASK = "source"  # the paper's: the source's K=2 foreground
TRANSPORT_STREAMS = "txt"  # txt 0.061, both 0.042, img 0.026
TRANSPORT_CHANNELS_FROM = "source"  # select the k channels on the source row


def check_foreground(rule: str) -> None:
    if rule not in FOREGROUND_RULES:
        raise ValueError(f"Unknown foreground rule {rule!r}. Allowed: {', '.join(FOREGROUND_RULES)}.")


def check_streams(streams: str) -> None:
    if streams not in STREAMS:
        raise ValueError(f"Unknown streams {streams!r}. Allowed: {', '.join(STREAMS)}.")
