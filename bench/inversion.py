"""How well the flow-ODE inversion of image-conditioned transport finds a reference's path.

    .venv/bin/python bench/inversion.py [--n 8] [--steps 8 16 32] [--quick]

For held-out single-object renders (the transport bench's source captions), invert each
render with `ditlens.transport.invert` (Euler steps up the built-in model's schedule), sample
back down from the inverted start with the same prompt and settings, and compare with the
render: pixel MSE (images in [0, 1]) and the share reconstructed within MSE 0.01. Baseline:
the same sampling from random noise. Two conditionings: the empty prompt (guidance has no
effect: the ODE is the same both ways) and the render's own caption with the pipeline's
guidance 4 (classifier-free guidance bends the two directions differently).
"""

from __future__ import annotations

import common
import torch

from ditlens.bench import transport_pairs
from ditlens.builtin import load_builtin
from ditlens.generation import GenerationSettings
from ditlens.metrics.fidelity import renders
from ditlens.transport import invert


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--n", type=int, default=8, help="renders (default 8)")
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32], help="Euler steps (default 8 16 32)")
    args = parser.parse_args()
    device = common.pick_device(args.device)
    notes = common.apply_threads(args.threads, device)
    if args.quick:
        args.n, args.steps = 2, [8]
    captions = [source for source, _ in transport_pairs(args.n)]
    common.print_header(
        "flow-ODE inversion of references (built-in model)", device, notes + [f"{len(captions)} held-out renders"]
    )
    pipe = load_builtin().to(device)
    pipe.set_progress_bar_config(disable=True)
    references = renders(captions)
    rows = []
    for steps in args.steps:
        settings = GenerationSettings(num_inference_steps=steps)
        for label, prompt_of in (("empty prompt", lambda c: ""), ("own caption, guidance 4", lambda c: c)):
            back, random = [], []
            for i, caption in enumerate(captions):
                reference = references[i : i + 1]
                prompt = {"prompt": [prompt_of(caption)]}
                levels = invert(pipe, pipe.image_to_latents(reference), prompt, settings)
                image = pipe(**prompt, latents=levels[0].to(device), output_type="pt", **settings.kwargs()).images
                noise = pipe(
                    **prompt, generator=torch.Generator().manual_seed(i), output_type="pt", **settings.kwargs()
                ).images
                back.append(float(((image.float().cpu() - reference) ** 2).mean()))
                random.append(float(((noise.float().cpu() - reference) ** 2).mean()))
            back_t, random_t = torch.tensor(back), torch.tensor(random)
            rows.append(
                [steps, label, float(back_t.mean()), float((back_t < 0.01).float().mean()), float(random_t.mean())]
            )
    common.print_table(
        ["steps", "conditioning", "MSE from the inverted start", "share within 0.01", "MSE from random noise"], rows
    )
    common.print_footer()


if __name__ == "__main__":
    main()
