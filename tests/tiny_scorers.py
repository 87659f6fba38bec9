"""Tiny random scorers saved to folders as `save_pretrained` writes them, for tests that pass
`--clip PATH` or `--segmenter PATH`: a CLIPModel with a character-level BPE tokenizer, and a
SegFormer semantic segmenter with two labelled classes. Random weights: they test the
plumbing and the arithmetic, not what the scores mean."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, SegformerConfig, SegformerForSemanticSegmentation

LETTERS = "abcdefghijklmnopqrstuvwxyz"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # OpenAI CLIP's


def clip_image_processor(size: int):
    """transformers' own CLIP image processor (the PIL backend: torchvision is not installed)."""
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor as Processor
    return Processor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_mean=MEAN, image_std=STD
    )


def save_tiny_clip(path: Path, seed: int = 0) -> Path:
    """Hidden 32, 2 layers, 32 px images, patch 8, 16 text positions."""
    path.mkdir(parents=True, exist_ok=True)
    # character-level BPE vocabulary: every letter inside a word and at its end (</w>), one merge
    tokens = [*LETTERS, *(c + "</w>" for c in LETTERS), "re", "<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (path / "merges.txt").write_text("#version: 0.2\nr e\n")
    bos, eos = len(tokens) - 2, len(tokens) - 1
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokens),
            max_position_embeddings=16,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
            **tower,
        ),
        vision_config=dict(image_size=32, patch_size=8, **tower),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPModel(config).eval().save_pretrained(path)
    clip_image_processor(32).save_pretrained(path)
    return path


def save_tiny_segmenter(path: Path, seed: int = 0) -> Path:
    """A 2-stage SegFormer (hidden 8/16), classes {0: background, 1: object}, 32 px input."""
    try:
        from transformers import SegformerImageProcessorPil as Processor
    except ImportError:  # transformers 4
        from transformers import SegformerImageProcessor as Processor
    path.mkdir(parents=True, exist_ok=True)
    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=2,
        id2label={0: "background", 1: "object"},
        label2id={"background": 0, "object": 1},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        SegformerForSemanticSegmentation(config).eval().save_pretrained(path)
    Processor(size={"height": 32, "width": 32}, do_reduce_labels=False).save_pretrained(path)
    return path
