"""`ditlens transport` and `ditlens interpolate`: a source prompt's (or a reference image's)
massive activations moved into a target prompt's generation, once or along a strip."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from ..io.outputs import output_folder
from . import run
from .options import UsageError, parse_window


def cmd_transport(args: argparse.Namespace) -> None:
    (result,) = run_transport(args, [args.alpha])
    scores = transport_scores(args, [result])
    with output_folder(args.out) as tmp:
        paths = result.save(tmp)
        run.write_json(tmp / "scores.json", scores)
        result.plot_strip(tmp / "strip.png", [(f"transported a={args.alpha:g}", result.transported[0])])
    run.say(args, f"wrote {args.out}/: {', '.join(p.name for p in paths.values())}, scores.json, strip.png")


def cmd_interpolate(args: argparse.Namespace) -> None:
    for a in [*args.alphas, args.alpha]:
        if not 0 <= a <= 1:
            raise ValueError(f"alpha must be within [0, 1]; got {a!r}.")
    results, frames = _interpolation(args)
    labels = None if args.over == "alpha" else [label for label, _, _ in frames]
    scores = transport_scores(args, results, labels)
    with output_folder(args.out) as tmp:
        run.write_json(tmp / "scores.json", scores)
        _save_interpolation(args, tmp, results, frames)
    run.say(args, f"wrote {args.out}/strip.png, scores.json and {len(frames)} frames in {args.out}/frames/")


def _interpolation(args: argparse.Namespace) -> tuple[list[Any], list[tuple[str, str, Any]]]:
    """The strip's results and its frames (column label, file name, image): one batch over
    --alphas, or one generation per k or per step window at --alpha."""
    if args.over == "alpha":
        (result,) = run_transport(args, list(args.alphas))
        return [result], [(f"a={a:g}", f"alpha{a:.2f}", image) for a, image in zip(result.alphas, result.transported)]
    base = transport_config(args)
    if args.over == "k":
        values = [(f"k={k}", f"k{k}", replace(base, k=k)) for k in args.ks]
    else:
        windows = [parse_window(text) for text in args.windows]
        values = [(f"steps [{a},{b})", f"window{a}-{b}", replace(base, step_window=(a, b))) for a, b in windows]
    results = run_transport(args, [args.alpha], [config for _, _, config in values])
    return results, [(label, name, r.transported[0]) for (label, name, _), r in zip(values, results)]


def _save_interpolation(args: argparse.Namespace, tmp: Any, results: list[Any], frames: list) -> None:
    from ..generation import to_pil

    first = results[0]
    if args.over == "alpha":
        first.save(tmp)
    else:  # source and target are the same in every result; settings, one entry per frame
        for name, image in (("source", first.source), ("target", first.target)):
            to_pil(image[None])[0].save(tmp / f"{name}.png")
        run.write_json(tmp / "settings.json", {"over": args.over, "frames": [r.settings for r in results]})
    (tmp / "frames").mkdir(exist_ok=True)
    for i, (_, name, image) in enumerate(frames):
        to_pil(image[None])[0].save(tmp / "frames" / f"frame_{i:03d}_{name}.png")
    title = f"{args.target}  <-  {args.source or args.reference}"
    first.plot_strip(tmp / "strip.png", [(label, image) for label, _, image in frames], title=title)


def transport_config(args: argparse.Namespace):
    from ..transport import TransportConfig

    return TransportConfig(
        k=args.k,
        alpha=args.alpha if hasattr(args, "alpha") else 1.0,
        mask=args.mask,
        foreground=args.foreground,
        streams=args.streams,
        channels_from=args.channels_from,
        statistic=args.statistic,
        sites=tuple(args.sites) if args.sites else None,
        step_window=run.window(args),
        generation=run.settings(args),
    )


def run_transport(args: argparse.Namespace, alphas: list[float], configs: list | None = None) -> list:
    """One TransportResult per config (default: the one the options describe), the pipeline
    loaded once; the inputs are checked before it loads, every config against the model
    before the first one runs."""
    from ..transport import transport_image, transport_text

    configs = configs or [transport_config(args)]
    _check_transport_inputs(args)
    run.scorers(args)  # the CLIP loads before the pipeline
    pipe = run.load(args)
    mask_image = _checked_against(pipe, args, configs)
    embeds = _transport_embeds(args, 2 + len(alphas))
    common = {"alphas": alphas, "mask_image": mask_image, "prompt_embeds": embeds}
    if not args.reference:
        return [
            transport_text(
                pipe, args.source, args.target, c, source_seed=args.source_seed, target_seed=args.target_seed, **common
            )
            for c in configs
        ]
    reference = _reference(args, pipe, configs[0])
    return [
        transport_image(
            pipe,
            reference,
            args.target,
            c,
            reference_prompt=args.reference_prompt or "",
            seed=args.target_seed,
            reference_path=args.reference_path,
            **common,
        )
        for c in configs
    ]


def _check_transport_inputs(args: argparse.Namespace) -> None:
    """The prompts' words, the image files and an inversion's scheduler: said before the model loads."""
    from ..io.images import check_image_file

    if not args.reference and not args.source:
        raise UsageError("Give --source PROMPT (text-conditioned) or --reference IMAGE (image-conditioned).")
    texts = [args.target] + ([args.reference_prompt or ""] if args.reference else [args.source])
    run.check_builtin_words(args, [text for text in texts if text])
    for option, path in (("--reference", args.reference), ("--mask-image", args.mask_image)):
        if path:  # missing, corrupt or oversized
            check_image_file(path, "Mask" if option == "--mask-image" else "Image")
    if args.reference and args.reference_path == "invert":  # the model index names the scheduler
        from ..models import model_index, scheduler_class
        from ..transport import check_invertible

        scheduler = scheduler_class(args.model)
        if scheduler is not None:
            check_invertible(scheduler, (model_index(args.model) or {}).get("_class_name", "the built-in pipeline"))


def _checked_against(pipe: Any, args: argparse.Namespace, configs: list) -> Any:
    """Every config validated against the loaded model; the --mask-image at its image size."""
    from ..adapters import adapter_for
    from ..generation import default_steps, image_size
    from ..io.images import load_mask

    adapter = adapter_for(pipe)
    for c in configs:
        steps = c.generation.num_inference_steps or default_steps(pipe)
        c.validate(adapter.hidden_size, [s.name for s in adapter.sites()], steps)
    if not args.mask_image:
        return None
    return load_mask(args.mask_image, image_size(pipe, run.settings(args))).float()


def _reference(args: argparse.Namespace, pipe: Any, config: Any) -> Any:
    from ..generation import image_size
    from ..io.images import load_image

    reference, note = load_image(args.reference, image_size(pipe, config.generation))
    if note:
        run.say(args, f"note: {note}")
    return reference


def _transport_embeds(args: argparse.Namespace, rows: int) -> dict[str, Any] | None:
    """--embeds for transport: row 0 conditions the source (or reference), row 1 the target;
    the batch [source, target alone, transported...] repeats row 1."""
    tensors = run.prompt_kwargs(args)
    if tensors is None:
        return None
    if tensors["prompt_embeds"].shape[0] != 2:
        raise ValueError(
            f"For transport, --embeds must hold 2 rows (source, target); {args.embeds!r} holds "
            f"{tensors['prompt_embeds'].shape[0]}."
        )
    import torch

    index = torch.tensor([0] + [1] * (rows - 1), device=tensors["prompt_embeds"].device)
    return {name: t.index_select(0, index) for name, t in tensors.items()}


def transport_scores(args: argparse.Namespace, results: list, labels: list[str] | None = None) -> dict[str, Any]:
    """scores.json of transport and interpolate: one row for the target alone, then one per
    transported image (labelled a=ALPHA, or by `labels`, one per result), and what this run
    could not measure. Printed as a table unless --quiet."""
    from ..metrics.scores import TRANSPORT_COLUMNS

    scorers = run.scorers(args)
    rows: dict[str, dict[str, float]] = {}
    for i, result in enumerate(results):
        found = scorers.score(result)
        if labels is not None:  # one transported image per result; the target alone is the same in each
            found = {name if name == "target alone" else labels[i]: row for name, row in found.items()}
        rows |= found if i == 0 else {name: row for name, row in found.items() if name != "target alone"}
    run.print_table(args, rows, TRANSPORT_COLUMNS)
    for missing in scorers.not_measured():
        run.say(args, f"  not measured: {missing}")
    return {"images": rows, "not_measured": scorers.not_measured()}
