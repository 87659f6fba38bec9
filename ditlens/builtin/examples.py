"""Prompts that the built-in model's commands use when none are given (all in its vocabulary)."""

EXAMPLE_PROMPTS: tuple[str, ...] = (
    "a large red circle in the center on a gray background",
    "a large blue square on the left and a small yellow triangle on the right on a black background",
    "a large green diamond at the top on a white and navy background",
    "a small pink cross at the bottom and a large orange circle at the top on a brown background",
)

#: (source, target) pairs for transport demos: same layout words, different attributes
EXAMPLE_TRANSPORT_PAIRS: tuple[tuple[str, str], ...] = (
    ("a large red circle in the center on a gray background", "a large blue square in the center on a gray background"),
    (
        "a large yellow triangle on the left on a black background",
        "a large cyan diamond on the left on a black background",
    ),
)
