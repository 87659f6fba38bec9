"""The caption grammar machinery both procedural worlds share.

A world (`scenes.py` = v1, `scenes_v2.py` = v2) names its words and the order they come
in; this module gives it the rest. Both grammars have one frame,

    a <object words> <position phrase> (and a <object words> <position phrase>)* on a <background words> background

so the vocabulary, the check that every prompt word is known, the word-by-word reader with
its errors (which name the word, its place and the grammar) and the joining of a caption
are written once, here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, ClassVar

FRAME_WORDS = ("a", "and", "on", "background")  # the words of every caption's frame
PHRASE_STARTS = ("on", "at", "in")  # a position phrase is '<start> the <position>'


class CaptionError(ValueError):
    """Known words in an order or combination the caption grammar does not produce."""


class UnknownWordError(ValueError):
    """A prompt word outside a world's vocabulary. Each world subclasses it with its words
    (`known`) and the name its message gives the model (`model`)."""

    known: ClassVar[frozenset[str]] = frozenset()
    model: ClassVar[str] = "The built-in model"

    def __init__(self, word: str, prompt: str):
        self.word, self.prompt = word, prompt
        hint = " (captions are lowercase)" if word.lower() in self.known else ""
        super().__init__(
            f"Unknown word {word!r} in prompt {prompt!r}{hint}. {self.model} knows: {', '.join(self.vocabulary())}"
        )

    @classmethod
    def vocabulary(cls) -> list[str]:
        """Every word the world's grammar can produce, sorted."""
        return sorted(cls.known)

    @classmethod
    def check_words(cls, text: str) -> None:
        """Raise this error for the first word of `text` outside the world's vocabulary."""
        for word in text.split():
            if word not in cls.known:
                raise cls(word, text)


def build_vocabulary(words: Iterable[str], phrases: Iterable[str]) -> frozenset[str]:
    """Every word a grammar can produce: the frame's, the world's `words` and the words of
    its position `phrases`."""
    vocabulary = set(FRAME_WORDS) | set(words)
    for phrase in phrases:
        vocabulary.update(phrase.split())
    return frozenset(vocabulary)


def check_choice(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


def check_fields(item: Any, choices: Mapping[str, tuple[str, ...]]) -> None:
    """Each field of `item` named in `choices` is one of its allowed words."""
    for name, allowed in choices.items():
        check_choice(name, getattr(item, name), allowed)


def check_objects(objects: Sequence[Any], kind: type, kind_name: str) -> None:
    """The objects of one scene: all of class `kind`, at distinct positions."""
    for obj in objects:
        if not isinstance(obj, kind):
            raise ValueError(f"Scene objects must be {kind_name}, got {obj!r}")
    positions = [obj.position for obj in objects]
    if len(set(positions)) != len(positions):
        raise ValueError(f"Objects of one scene need distinct positions, got {positions}")


def join_caption(objects: Iterable[Sequence[str]], background: Sequence[str]) -> str:
    """The frame filled in: each object's words (its position phrase last), then the
    background's words."""
    return " and ".join("a " + " ".join(words) for words in objects) + f" on a {' '.join(background)} background"


class CaptionReader:
    """A caption read word by word. `take` returns the next word if it is one of the allowed
    ones, else raises a CaptionError that names what was expected, where, and the grammar."""

    def __init__(self, text: str, grammar: str):
        self.text, self.grammar = text, grammar
        self.words = text.split()  # runs of whitespace count as one space
        self.i = 0

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def take(self, allowed: Collection[str], what: str) -> str:
        word = self.peek()
        if word is None or word not in allowed:
            got = f"{word!r}" if word is not None else "the end of the prompt"
            raise CaptionError(
                f"Expected {what} at word {self.i + 1} of prompt {self.text!r}, got {got}. Grammar: {self.grammar}"
            )
        self.i += 1
        return word

    def position(self, phrases: Mapping[str, str]) -> str:
        """A position phrase ('on the left', v2's 'at the top right') -> its position."""
        start = self.i
        phrase = [self.take(PHRASE_STARTS, "a position phrase"), self.take(("the",), "'the'")]
        names = [position.split() for position in phrases]
        phrase.append(self.take({name[0] for name in names}, "a position"))
        while True:  # a position of more words ('top left'): take the next one while it continues one
            said = phrase[2:]
            following = {name[len(said)] for name in names if len(name) > len(said) and name[: len(said)] == said}
            if self.peek() not in following:
                break
            phrase.append(self.take(following, "the rest of the position"))
        by_phrase = {tuple(words.split()): position for position, words in phrases.items()}
        if tuple(phrase) not in by_phrase:
            raise CaptionError(
                f"{' '.join(phrase)!r} (word {start + 1} of prompt {self.text!r}) is not a position "
                f"phrase; use one of: {', '.join(repr(p) for p in phrases.values())}"
            )
        return by_phrase[tuple(phrase)]

    def objects(
        self,
        attributes: Sequence[tuple[str, tuple[str, ...], str]],
        phrases: Mapping[str, str],
        max_objects: int | None = None,
    ) -> list[dict[str, str]]:
        """The objects up to the 'on' that starts the background: 'a', then one word per
        (name, allowed words, what) of `attributes` in that order, then a position phrase;
        objects are joined by 'and'. Returns each object's words by name (and `position`)."""
        found = []
        while True:
            self.take(("a",), "'a'")
            obj = {name: self.take(allowed, what) for name, allowed, what in attributes}
            obj["position"] = self.position(phrases)
            found.append(obj)
            if self.take(("and", "on"), "'and' (another object) or 'on' (the background)") == "on":
                return found
            if max_objects is not None and len(found) == max_objects:
                raise CaptionError(
                    f"Prompt {self.text!r} names more than {max_objects} objects; the grammar takes 1 to {max_objects}"
                )

    def end(self) -> None:
        """Nothing may follow the background."""
        if self.i != len(self.words):
            raise CaptionError(
                f"Unexpected {self.words[self.i]!r} after the background (word {self.i + 1} of prompt "
                f"{self.text!r}). Grammar: {self.grammar}"
            )
