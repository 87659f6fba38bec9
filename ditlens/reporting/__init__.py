"""Figures (matplotlib), HTML/Markdown reports and the verdicts worded from numbers."""
