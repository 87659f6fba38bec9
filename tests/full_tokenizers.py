"""Tokenizers of the tiny pipelines of tests/full_pipelines.py, built in code (no download).

CLIP, T5, Qwen2 (also FLUX.2's Qwen3) and Gemma tokenizers of the real `transformers` classes and
their real pre-tokenizers, with small vocabularies: each knows the words of `WORDS` as whole tokens
(a few hundred tokens in all) and splits any other text into characters (bytes for the byte-level
ones, unknown-token for CLIP and T5).
"""

from __future__ import annotations

import re

from tokenizers import AddedToken, pre_tokenizers
from tokenizers.models import BPE
from transformers import CLIPTokenizer, GemmaTokenizerFast, Qwen2TokenizerFast, T5TokenizerFast

# Whole-word tokens of every tokenizer (the built-in scenes' words and a few more)
WORDS = (
    "a an and the of on in at to with by next above below behind front photo image picture "
    "red green blue yellow purple orange cyan pink gray grey black white brown navy olive "
    "cube ball sphere circle square triangle diamond cross cone cylinder cat dog "
    "small large big tiny left right top bottom center middle background"
).split()


def _add_chains(pieces: list[str], vocab: dict[str, int], merges: list[tuple[str, str]], **bpe) -> None:
    """Append BPE merges (and their tokens) so that every piece becomes a single token.

    Each piece is first split by the merges so far; then merges that join its parts left to right
    are appended. Appended merges rank after all earlier ones, so earlier pieces keep their token."""
    for piece in pieces:
        parts = [t.value for t in BPE(dict(vocab), list(merges), **bpe).tokenize(piece)]
        joined = parts[0]
        for part in parts[1:]:
            if (joined, part) not in merges:
                merges.append((joined, part))
            joined += part
            vocab.setdefault(joined, len(vocab))


def _pieces(tokenizer, texts: list[str], specials: tuple[str, ...] = ()) -> list[str]:
    """The pre-tokenized pieces that `tokenizer`'s BPE model sees in `texts` (special tokens cut out)."""
    backend = tokenizer.backend_tokenizer
    pieces = []
    for text in texts:
        for part in re.split("|".join(map(re.escape, specials)), text) if specials else [text]:
            if backend.normalizer is not None:
                part = backend.normalizer.normalize_str(part)
            pieces += [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(part)]
    return list(dict.fromkeys(p for p in pieces if p))


ASCII = [chr(i) for i in range(33, 127)]  # printable, no space


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP's byte-level BPE with the `</w>` end-of-word suffix, lower-cased; 77 tokens as in the
    real CLIP. Printable ASCII characters (with and without `</w>`) plus the words: 375 tokens.
    Other characters become `<|endoftext|>` (the unknown token)."""
    vocab = {c: i for i, c in enumerate(ASCII + [c + "</w>" for c in ASCII])}
    merges: list[tuple[str, str]] = []
    probe = CLIPTokenizer(vocab={**vocab, "<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}, merges=[])
    _add_chains(_pieces(probe, [" ".join(WORDS)]), vocab, merges, end_of_word_suffix="</w>")
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def t5_tokenizer() -> T5TokenizerFast:
    """T5's Unigram (sentencepiece-style `▁` word starts): `<pad>` 0, `</s>` 1, `<unk>` 2, the
    words, and printable ASCII characters as a fallback (155 tokens), no sentinel tokens."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -3.0) for w in WORDS] + [(c, -8.0) for c in ASCII]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_VL_SPECIALS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
THINK = ("<think>", "</think>")  # Qwen3: added tokens, not special
# Qwen3's template, reduced to what Flux2KleinPipeline asks of it (roles, generation prompt, enable_thinking)
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
QWEN_CHAT_TEMPLATE_RENDERED = "<|im_start|>user\nphoto<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
# QwenImagePipeline.prompt_template_encode (set in its __init__); its first 34 tokens are dropped
QWENIMAGE_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def qwen_tokenizer(extra_texts: tuple[str, ...] = (), vision_tokens: bool = False) -> Qwen2TokenizerFast:
    """Qwen2's byte-level BPE (GPT-style split, `Ġ` for a leading space) with all 256 byte symbols,
    so any text tokenizes; the words, their space-prefixed forms and the pieces of `extra_texts`
    (e.g. a pipeline's prompt template) are single tokens. Special tokens after the BPE vocabulary
    (as in Qwen), and a chat template. 652 tokens (713 with Qwen-Image's template and vision tokens)."""
    specials = QWEN_SPECIALS + (QWEN_VL_SPECIALS if vision_tokens else ())
    cut = specials + THINK
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}  # a set: sorted
    merges: list[tuple[str, str]] = []
    texts = [" ".join(WORDS), "\n".join(WORDS), QWEN_CHAT_TEMPLATE_RENDERED, *extra_texts]
    probe = Qwen2TokenizerFast(vocab={**vocab, "<|endoftext|>": len(vocab)}, merges=[])
    _add_chains(_pieces(probe, texts, cut), vocab, merges)
    for token in cut:
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=merges, model_max_length=32768)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def gemma_tokenizer() -> GemmaTokenizerFast:
    """Gemma's BPE (`▁` for spaces, byte fallback): `<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3,
    `<mask>` 4, the 256 `<0xNN>` byte tokens, printable ASCII and the words (588 tokens).
    The pipeline's long default `complex_human_instruction` is split into characters."""
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
    for symbol in [f"<0x{b:02X}>" for b in range(256)] + ["▁"] + ASCII:
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    # Gemma pre-tokenizes a whole text as one piece; merges never cross a "▁", so words are the pieces
    pieces = [p for w in WORDS for p in (w, "▁" + w)]
    _add_chains(pieces, vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    return GemmaTokenizerFast(vocab=vocab, merges=merges, model_max_length=8192)
