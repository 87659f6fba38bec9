"""The built-in model's text encoder: a word-level tokenizer and a 2-layer transformer.

It is trained jointly with the built-in transformer on the scenes' captions, so its
vocabulary is exactly the caption grammar's (`scenes.vocabulary()`), stored in its config
with the name of the world whose grammar it is (`world`: "v1" = `scenes.py`, "v2" =
`scenes_v2.py`; configs written before worlds existed are v1).

Sequence layout (fixed length `max_length`):

    [CLS] w_1 ... w_n [PAD] ... [PAD]

The CLS token is always there, so an empty prompt (the unconditional input of
classifier-free guidance) is a valid sequence; its output is the pooled embedding.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin  # also what diffusers' loader looks up here
from torch import nn

PAD, CLS = "[PAD]", "[CLS]"
SPECIAL_TOKENS = (PAD, CLS)  # ids 0 and 1; words start at 2
WORLDS: dict[str, str] = {"v1": "scenes", "v2": "scenes_v2"}  # world -> module of ditlens.builtin


def scenes_of(world: str) -> ModuleType:
    """The scenes module (grammar, renderer, sampler) of a world: `scenes_of("v2").parse_caption`."""
    if world not in WORLDS:
        raise ValueError(f"Unknown world {world!r}; allowed: {', '.join(WORLDS)}")
    return importlib.import_module(f"ditlens.builtin.{WORLDS[world]}")


class WordTokenizer:
    """Prompt -> `[CLS] words [PAD]...` ids of fixed length; a plain object (no weights),
    so data-loading workers can tokenise without touching the model."""

    def __init__(self, vocabulary: list[str] | tuple[str, ...], max_length: int, world: str = "v1"):
        # Unknown words raise the world's UnknownWordError, whose message lists its grammar's words.
        self.unknown_word_error = scenes_of(world).UnknownWordError
        self.word_to_id = {w: i for i, w in enumerate(SPECIAL_TOKENS + tuple(vocabulary))}
        if len(self.word_to_id) != len(SPECIAL_TOKENS) + len(vocabulary):
            raise ValueError(f"Vocabulary has duplicate words or special tokens: {vocabulary}")
        self.max_length = max_length
        self.pad_id, self.cls_id = self.word_to_id[PAD], self.word_to_id[CLS]

    def __len__(self) -> int:
        return len(self.word_to_id)

    def __call__(self, prompts: str | list[str]) -> torch.Tensor:
        """Word ids `(B, max_length)`; raises UnknownWordError (which lists the vocabulary)
        for a word outside it and ValueError for a prompt longer than `max_length - 1` words."""
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = torch.full((len(prompts), self.max_length), self.pad_id, dtype=torch.long)
        ids[:, 0] = self.cls_id
        for row, prompt in enumerate(prompts):
            words = prompt.split()
            if len(words) > self.max_length - 1:
                raise ValueError(
                    f"Prompt {prompt!r} has {len(words)} words; the built-in text encoder takes "
                    f"at most {self.max_length - 1}"
                )
            for col, word in enumerate(words, start=1):
                if word not in self.word_to_id or word in SPECIAL_TOKENS:
                    raise self.unknown_word_error(word, prompt)
                ids[row, col] = self.word_to_id[word]
        return ids


class BuiltinTextEncoder(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers types config_name twice
    """Word embeddings + learned positions + a pre-norm transformer encoder.

    `forward(input_ids)` returns `(prompt_embeds (B, L, D), pooled (B, D))`; padded
    positions are masked as attention keys but still produce embeddings (the FLUX
    transformer reads all `L` positions, as FLUX.1 reads T5's padded sequence).
    """

    @register_to_config
    def __init__(
        self,
        vocabulary: list[str] | tuple[str, ...] = (),
        max_length: int = 32,
        hidden_size: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        world: str = "v1",
    ):
        super().__init__()
        if not vocabulary:
            raise ValueError("BuiltinTextEncoder needs a non-empty vocabulary (list of words)")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.tokenizer = WordTokenizer(vocabulary, max_length, world)
        self.token_embedding = nn.Embedding(len(self.tokenizer), hidden_size)
        self.position_embedding = nn.Parameter(torch.zeros(max_length, hidden_size))
        layer = nn.TransformerEncoderLayer(
            hidden_size,
            num_heads,
            dim_feedforward=int(hidden_size * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(hidden_size)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.02)

    def tokenize(self, prompts: str | list[str]) -> torch.Tensor:
        """Word ids `(B, max_length)`; see `WordTokenizer`."""
        return self.tokenizer(prompts)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = input_ids == self.tokenizer.pad_id  # (B, L) True = masked key
        x = self.token_embedding(input_ids) + self.position_embedding[: input_ids.shape[1]]  # (B, L, D)
        x = self.encoder(x, src_key_padding_mask=pad)
        x = self.final_norm(x)
        return x, x[:, 0]  # (B, L, D), pooled = CLS output (B, D)
