"""The parts the built-in model's procedural worlds are made of.

The worlds themselves are `ditlens.builtin.scenes` (v1: flat shapes, 32 px, the shipped
model's) and `ditlens.builtin.scenes_v2` (v2: textured shapes, 64 px, drawn from a seed);
use those. This package holds what they share and what world v2's renderer is built from:

- `grammar`: the caption frame both grammars follow, the vocabulary check, the word-by-word
  reader and its errors.
- `batches`: scenes as rows of integer arrays, the draws both samplers make alike, the
  train/held-out split of captions, a batch's tensors.
- `seeded`: the counter-based hash world v2 draws from.
- `v2_spec`, `v2_layout`, `v2_shapes`, `v2_paint`: world v2's words and ranges, what a seed
  draws, the shapes' footprints and masks, the colour bands and textures.
"""
