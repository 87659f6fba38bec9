"""The hooking core: sites, recording, channel rules, edits, K = 2 masks, row layouts, and when
to replay work from CUDA graphs (performance, cuda_graphs). Imports only ditlens.adapters and
ditlens.choices: no plotting, CLI or web code."""
