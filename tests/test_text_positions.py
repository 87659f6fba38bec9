"""`Adapter.text_positions` against each family's own text stream (tests/full_pipelines.py).

Causal text encoders (CLIP, Qwen2.5-VL, Qwen3, Gemma2): the stream's row i depends on tokens
0..i only, so replacing the subject's words changes it first at their first position, and
replacing the word right after them first at one past their last. T5 is bidirectional (every
row changes): there the token ids the pipeline hands its T5 at the positions must be the
word's own.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ditlens.adapters import adapter_for
from ditlens.adapters.base import Adapter, UnsupportedModelError, call_default
from ditlens.adapters.flux2 import Flux2Adapter
from ditlens.attention import TruncatedWordError, word_positions

from .full_pipelines import FAMILIES, build_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PROMPT = "a photo of a red cube on the left"
# (words, the same words replaced by others of the same token count, the word right after them and its replacement)
SUBJECT, OTHER, NEXT, NEXT_OTHER = "red cube", "blue ball", "on", "in"
CAUSAL = ("flux2", "qwenimage", "sana", "sd3")  # sd3: its CLIP part, which comes first
T5 = {"flux": "text_encoder_2", "sd3": "text_encoder_3"}  # the T5 encoder, where the stream holds its output


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param, build_pipeline(request.param)


def text_stream(family: str, pipe, prompt: str) -> torch.Tensor:
    """(L, D): the conditional prompt's `encoder_hidden_states`, from the pipeline's own encode_prompt
    called as its `__call__` calls it by default."""
    with torch.no_grad():
        if family == "flux":
            return pipe.encode_prompt(prompt=prompt, prompt_2=None)[0][0]
        if family == "flux2":
            return pipe.encode_prompt(prompt=prompt)[0][0]
        if family == "qwenimage":
            return pipe.encode_prompt(prompt=prompt, max_sequence_length=call_default(pipe, "max_sequence_length"))[0][
                0
            ]
        if family == "sana":
            instruction = call_default(pipe, "complex_human_instruction")  # encode_prompt's own default is None
            return pipe.encode_prompt(prompt, do_classifier_free_guidance=False, complex_human_instruction=instruction)[
                0
            ][0]
        return pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False)[0][0]


def first_change(family: str, pipe, prompt: str, edited: str) -> int:
    """The first text-stream row that differs between `prompt` and `edited` (every earlier row is identical)."""
    a, b = text_stream(family, pipe, prompt), text_stream(family, pipe, edited)
    assert a.shape == b.shape, "the edit changed the stream's length"
    changed = (a != b).any(-1).nonzero().flatten().tolist()
    assert changed, "the edit changed nothing"
    return changed[0]


def t5_ids(pipe, encoder: str, prompt: str) -> list[int]:
    """The input ids the pipeline hands its T5 encoder for `prompt` (read off the encoder's forward)."""
    seen = []
    handle = getattr(pipe, encoder).register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("input_ids", args[0] if args else None)), with_kwargs=True
    )
    try:
        text_stream("flux" if encoder == "text_encoder_2" else "sd3", pipe, prompt)
    finally:
        handle.remove()
    (ids,) = seen
    return ids[0].tolist()


def test_causal_stream_changes_first_at_the_words_and_just_after_them(family):
    name, pipe = family
    if name not in CAUSAL:
        pytest.skip("its text stream is T5's alone (bidirectional): see the T5 test")
    adapter = adapter_for(pipe)
    positions = adapter.text_positions(pipe, PROMPT, [SUBJECT])
    causal = [p for p in positions if p < pipe.tokenizer_max_length] if name == "sd3" else positions
    edited = PROMPT.replace(SUBJECT, OTHER)
    assert adapter.text_positions(pipe, edited, [OTHER]) == positions  # same token count, same place
    start = first_change(name, pipe, PROMPT, edited)
    stop = first_change(name, pipe, PROMPT, PROMPT.replace(f" {NEXT} ", f" {NEXT_OTHER} "))
    assert causal == list(range(start, stop)), (causal, start, stop)


def test_every_occurrence_counts(family):
    name, pipe = family
    prompt = "a red cube and a red ball"
    positions = adapter_for(pipe).text_positions(pipe, prompt, ["red"])
    per_stream = 2 if name == "sd3" else 1  # SD3: once in CLIP's part, once in T5's
    assert len(positions) == 2 * per_stream
    if name in CAUSAL:  # only the first occurrence replaced: the stream changes first there
        assert first_change(name, pipe, prompt, prompt.replace("red", "blue", 1)) == positions[0]


@pytest.mark.parametrize("name", sorted(T5))
def test_t5_ids_at_the_positions_are_the_words(name):
    pipe = build_pipeline(name)
    prompt, words = "a photo of a red cube and a red ball", ["red", "ball"]
    positions = adapter_for(pipe).text_positions(pipe, prompt, words)
    offset = pipe.tokenizer_max_length if name == "sd3" else 0  # SD3: T5's part follows CLIP's 77 tokens
    ids = t5_ids(pipe, T5[name], prompt)
    tokenizer = pipe.tokenizer_2 if name == "flux" else pipe.tokenizer_3
    red, ball = (tokenizer(w, add_special_tokens=False).input_ids for w in words)
    assert [ids[p - offset] for p in positions if p >= offset] == red + red + ball  # in prompt order


def test_a_missing_word_is_named(family):
    name, pipe = family
    with pytest.raises(ValueError, match=re.escape("Word 'cat' does not occur in prompt 'a red cube'")):
        adapter_for(pipe).text_positions(pipe, "a red cube", ["red", "cat"])
    with pytest.raises(ValueError, match="Word 'cub'"):  # whole words only
        adapter_for(pipe).text_positions(pipe, "a red cube", ["cub"])


def test_a_truncated_word_is_named_with_the_reason(family):
    name, pipe = family
    prompt = "a " * 80 + "red ball"  # past CLIP's 77 tokens, and past 8 of any tokenizer's
    with pytest.raises(TruncatedWordError, match=r"Word 'ball' of prompt 'a a .*max_sequence_length"):
        adapter_for(pipe).text_positions(pipe, prompt, ["ball"], max_sequence_length=8)
    assert adapter_for(pipe).text_positions(pipe, "a red ball", ["ball"], max_sequence_length=8)  # fits


def test_builtin_model_positions_are_word_positions():
    from ditlens.builtin import load_builtin, scenes

    pipe = load_builtin()
    prompt = scenes.caption(scenes.sample_scene(np.random.default_rng(0)))  # "a large orange triangle at ..."
    words = prompt.split()
    subject, background = " ".join(words[2:4]), words[-2]  # colour and shape of the first object; a background colour
    positions = adapter_for(pipe).text_positions(pipe, prompt, [subject, background])
    assert positions == word_positions(prompt, [subject, background])
    ids = pipe.text_encoder.tokenize(prompt)[0].tolist()  # what its encoder reads: [CLS] a large ...
    word_ids = {pipe.text_encoder.tokenizer.word_to_id[w] for w in (*subject.split(), background)}
    assert len(positions) >= 3 and {ids[p] for p in positions} == word_ids


def test_families_without_a_mapping_are_refused_by_name():
    class Bare(Adapter):
        def split(self, output, args, kwargs):
            raise NotImplementedError

        def merge(self, output, args, kwargs, streams):
            raise NotImplementedError

    with pytest.raises(UnsupportedModelError, match="not wired for SimpleNamespace"):
        Bare(torch.nn.Identity()).text_positions(SimpleNamespace(), "a red cube", ["cube"])
    with pytest.raises(UnsupportedModelError, match="Qwen3 chat template only, not for SimpleNamespace"):
        Flux2Adapter(torch.nn.Identity()).text_positions(SimpleNamespace(), "a red cube", ["cube"])
