"""Why copied hidden states draw noise from another seed: one pair, the same settings, the
target on its own seed or on the source's.

    .venv/bin/python bench/transport_seed.py [--out transport_seed.png]

Transport copies the source row's block outputs; at the last block they are the source's
velocity, which only fits the source's noise. On another seed the copied tokens decode to
noise, which the attribute classifier can still read as the source's colour and shape: so
`ditlens.reporting.verdicts.transfer_score` weighs transfer by (1 - ghosting). Prints, per setting and
alpha, colour and shape taken from the source and the ghosting share (noise in the object
region), and writes the strips (built-in model, CPU).
"""

from __future__ import annotations

import argparse

from ditlens.builtin import load_builtin
from ditlens.builtin.examples import EXAMPLE_TRANSPORT_PAIRS
from ditlens.metrics.classifier import AttributeClassifier
from ditlens.metrics.fidelity import transport_scores
from ditlens.reporting.plots import plot_image_table
from ditlens.transport import TransportConfig, transport_text

SETTINGS = {  # name -> (short row label, config)
    "every channel, source mask, both streams": ("k=256, both", TransportConfig(k=256, mask="source", streams="both")),
    "every channel, source mask, image stream": ("k=256, img", TransportConfig(k=256, mask="source", streams="img")),
    "the defaults (TransportConfig())": ("defaults", TransportConfig()),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="transport_seed.png", help="the strips (default: transport_seed.png)")
    args = parser.parse_args()
    pipe = load_builtin()
    pipe.set_progress_bar_config(disable=True)
    classifier = AttributeClassifier.from_pretrained()
    source, target = EXAMPLE_TRANSPORT_PAIRS[0]
    print(f"source: {source!r}\ntarget: {target!r}")
    rows, labels, alphas = [], [], [0.5, 1.0]
    for name, (short, config) in SETTINGS.items():
        for seeds, seed_label in (((0, 1), "target on its own seed"), ((0, 0), "target on the source's seed")):
            r = transport_text(pipe, source, target, config, alphas=alphas, source_seed=seeds[0], target_seed=seeds[1])
            for a, m in zip(alphas, transport_scores(r.transported, source, target, r.target, classifier)):
                print(
                    f"RESULT {name}, {seed_label}, alpha {a:g}: colour {m['colour_from_source']:.0f} shape "
                    f"{m['shape_from_source']:.0f} ghosting {m['ghosting']:.2f}"
                )
            rows.append([r.source, r.target, *r.transported])
            labels.append(f"{short}\n{'own seed' if seeds[1] else 'same seed'}")
    plot_image_table(rows, args.out, labels, ["source", "target alone", *[f"a={a:g}" for a in alphas]])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
