"""The vocabulary of the demo corpus and the grammar that describes a scene in one sentence.

Every word of a sentence carries a *type* saying what a reader needs to fill it in:

``appearance``
    a colour, shape, size or backdrop word: visible in any single frame (a 2D feature).
``motion``
    an action, speed or direction word: visible only across frames (a 3D feature).
``text``
    everything else: fixed phrases and collocations (``takes a deep breath``, ``in front of``) that
    the rest of the sentence predicts, plus grammar words.

The visual attributes come from the scene (drawn by :mod:`moviefib.demo.scenes` from its own random
stream) and every template accepts every value, so the sentence around a visual word says nothing
about it: a text-only model can only learn the (uniform) prior. Text words, on the contrary, are
pinned by their neighbours. Colours, sizes and shapes never start with a vowel, so ``a``/``an`` cannot
give a visual word away. Each visual value has exactly one word, so a model that sees it can name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TEXT, APPEARANCE, MOTION = "text", "appearance", "motion"
WORD_TYPES = (TEXT, APPEARANCE, MOTION)

# Word -> RGB. Saturated colours on a muted background stay apart after 4:2:0 chroma subsampling.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (45, 85, 235),
    "yellow": (240, 215, 40),
    "purple": (150, 55, 205),
    "pink": (250, 135, 195),
    "white": (245, 245, 245),
    "cyan": (40, 215, 225),
}
SHAPES = ("ball", "box", "star", "triangle", "ring", "diamond", "heart")
# Size word -> radius as a fraction of the frame width.
SIZES: dict[str, float] = {"small": 0.10, "large": 0.17}
# Direction word -> unit vector in image coordinates (x right, y down).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}
# Speed word -> frame widths per second.
SPEEDS: dict[str, float] = {"slowly": 0.10, "quickly": 0.30}
ACTIONS = ("glides", "bounces", "spins", "grows", "shrinks", "pulses")
BACKDROPS = ("tree", "house", "window", "door", "lamp")

# Fixed phrases that open a sentence; each word is predictable from the others.
_INTROS = (
    "for a moment", "all of a sudden", "once again", "at the same time", "in the meantime",
    "later that night", "on the screen", "in the distance", "a moment later",
)
# Collocations of a character. ``P`` is the possessive pronoun, ``R`` the reflexive one: a sentence
# with two of them lets a reader infer one pronoun from the other.
_GESTURES = (
    "takes a deep breath", "shakes P head", "holds P breath", "raises an eyebrow", "rubs P eyes",
    "folds P arms", "clears P throat", "bites P lip", "scratches P head", "checks P watch",
    "shrugs P shoulders", "rolls P eyes", "leans back in P chair", "narrows P eyes", "purses P lips",
    "smiles to R", "nods to R", "frowns in confusion", "stares in disbelief", "sighs with relief",
    "gasps in surprise", "claps P hands", "wipes P brow", "cocks P head",
)
# Gestures of two characters (a plural verb after ``SOMEONE and SOMEONE``).
_PAIR_GESTURES = ("exchange a glance", "share a smile", "trade puzzled looks", "hold their breath")
_PRONOUNS = {"his": "himself", "her": "herself"}
_BACKDROP_PREPS = ("near the", "in front of the", "past the", "beside the")
_TOWARD = ("toward the", "towards the", "to the")


@dataclass(frozen=True)
class SceneWords:
    """The words that describe what a clip shows (the visual ground truth of its sentences).

    Attributes:
        colour, shape, size: appearance of the moving object (keys of COLOURS, SHAPES, SIZES).
        action, speed, direction: its motion (ACTIONS, SPEEDS, DIRECTIONS).
        backdrop: the static object drawn in the background (BACKDROPS).
        extra: ``(colour, shape)`` of a second, still object in a corner, or None.
    """

    colour: str
    shape: str
    size: str
    action: str
    speed: str
    direction: str
    backdrop: str
    extra: tuple[str, str] | None = None


@dataclass(frozen=True)
class Sentence:
    """A description sentence and the type of each of its whitespace-separated words.

    Attributes:
        text: the sentence, as written in the annotation file.
        types: one of WORD_TYPES per word of ``text.split()``.
        roles: per word, the scene attribute it names (``colour``, ``shape``, ``size``, ``backdrop``,
            ``action``, ``speed``, ``direction``, ``extra_colour``, ``extra_shape``) or ``""`` for a
            text word.
    """

    text: str
    types: tuple[str, ...]
    roles: tuple[str, ...]


_ROLE_TYPES = {
    "colour": APPEARANCE, "shape": APPEARANCE, "size": APPEARANCE, "backdrop": APPEARANCE,
    "extra_colour": APPEARANCE, "extra_shape": APPEARANCE,
    "action": MOTION, "speed": MOTION, "direction": MOTION,
}


def draw_scene_words(rng: np.random.Generator) -> SceneWords:
    """Draw every visual attribute independently and uniformly."""
    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    colour, shape = pick(tuple(COLOURS)), pick(SHAPES)
    words = dict(colour=colour, shape=shape, size=pick(tuple(SIZES)), action=pick(ACTIONS),
                 speed=pick(tuple(SPEEDS)), direction=pick(tuple(DIRECTIONS)), backdrop=pick(BACKDROPS))
    extra = None
    if rng.random() < 0.35:
        extra = (pick(tuple(COLOURS)), pick(SHAPES))
        while extra == (colour, shape):
            extra = (pick(tuple(COLOURS)), pick(SHAPES))
    return SceneWords(**words, extra=extra)


class _Builder:
    """Accumulates (word, role) pairs; punctuation sticks to the previous word."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.roles: list[str] = []

    def text(self, phrase: str) -> None:
        for w in phrase.split():
            self.words.append(w)
            self.roles.append("")

    def attr(self, word: str, role: str) -> None:
        self.words.append(word)
        self.roles.append(role)

    def punct(self, mark: str) -> None:
        self.words[-1] += mark

    def sentence(self) -> Sentence:
        words = list(self.words)
        words[0] = words[0][0].upper() + words[0][1:]
        words[-1] += "."
        return Sentence(" ".join(words), tuple(_ROLE_TYPES.get(r, TEXT) for r in self.roles),
                        tuple(self.roles))


def describe(scene: SceneWords, rng: np.random.Generator) -> Sentence:
    """One sentence about ``scene``; the template and text words come from ``rng`` only."""
    return _Describer(scene, rng).sentence()


class _Describer:
    """The writing of one sentence: the scene, the random stream and the words so far.

    The draws from ``rng`` happen in a fixed order (pronoun, sentence frame, then the frame's phrases
    left to right): the corpus is a function of its seed, so that order is part of the output.
    """

    def __init__(self, scene: SceneWords, rng: np.random.Generator) -> None:
        self.scene, self.rng, self.b = scene, rng, _Builder()
        self.pronoun = self.pick(tuple(_PRONOUNS))

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def sentence(self) -> Sentence:
        _FRAMES[int(self.rng.integers(len(_FRAMES)))](self)
        return self.b.sentence()

    # -- phrases

    def gesture(self, avoid: str = "") -> str:
        g = self.pick(_GESTURES)
        while g == avoid:
            g = self.pick(_GESTURES)
        self.b.text(g.replace("P ", f"{self.pronoun} ").replace(" R", f" {_PRONOUNS[self.pronoun]}"))
        return g

    def noun_phrase(self, article: str) -> None:
        self.b.text(article)
        if self.rng.random() < 0.5:
            self.b.attr(self.scene.size, "size")
        self.b.attr(self.scene.colour, "colour")
        self.b.attr(self.scene.shape, "shape")

    def motion(self, forms: int = 5) -> None:
        # forms=4 leaves out the last form: after "as it", another "as it moves" would stutter.
        toward = self.pick(_TOWARD)
        _MOTION_FORMS[int(self.rng.integers(forms))](self.b, self.scene, toward)

    def backdrop_suffix(self) -> None:
        if self.rng.random() < 0.3:
            self.b.text(self.pick(_BACKDROP_PREPS))
            self.b.attr(self.scene.backdrop, "backdrop")

    def extra_clause(self) -> None:
        extra = self.scene.extra
        if extra is not None and self.rng.random() < 0.6:
            if self.rng.random() < 0.5:
                self.b.punct(",")
            self.b.text("while a")
            self.b.attr(extra[0], "extra_colour")
            self.b.attr(extra[1], "extra_shape")
            self.b.text(self.pick(("rests in the corner", "sits still in the corner", "stays in the corner")))

    # -- sentence frames (_FRAMES)

    def intro_first(self) -> None:
        """[intro,] NP motion [backdrop] [extra]"""
        if self.rng.random() < 0.5:
            self.b.text(self.pick(_INTROS))
            self.b.punct(",")
        self.noun_phrase(self.pick(("a", "the")))
        self.motion()
        self.backdrop_suffix()
        self.extra_clause()

    def someone_watches(self) -> None:
        """SOMEONE watches as NP motion [backdrop]"""
        self.b.text(self.pick(("SOMEONE watches as", "SOMEONE looks on as", "SOMEONE and SOMEONE watch as")))
        self.noun_phrase("a")
        self.motion()
        self.backdrop_suffix()

    def while_someone_gestures(self) -> None:
        """NP motion [backdrop] while SOMEONE gestures"""
        self.noun_phrase(self.pick(("a", "the")))
        self.motion()
        self.backdrop_suffix()
        self.b.text("while SOMEONE")
        self.gesture()

    def someone_gestures_as(self) -> None:
        """SOMEONE gestures [and gestures] as NP motion [backdrop]"""
        if self.rng.random() < 0.2:
            self.b.text("SOMEONE and SOMEONE")
            self.b.text(self.pick(_PAIR_GESTURES))
        else:
            self.b.text("SOMEONE")
            first = self.gesture()
            if self.rng.random() < 0.35:
                self.b.text("and")
                self.gesture(avoid=first)
        self.b.text("as")
        self.noun_phrase("a")
        self.motion()
        self.backdrop_suffix()

    def someone_follows(self) -> None:
        """SOMEONE follows the NP with his eyes as it moves"""
        self.b.text("SOMEONE follows")
        self.noun_phrase("the")
        self.b.text(f"with {self.pronoun} eyes as it")
        self.motion(forms=4)

    def backdrop_first(self) -> None:
        """In front of the house, NP motion [extra]"""
        self.b.text(self.pick(_BACKDROP_PREPS))
        self.b.attr(self.scene.backdrop, "backdrop")
        self.b.punct(",")
        self.noun_phrase("a")
        self.motion()
        self.extra_clause()


# The six sentence frames, in the order of the draw that picks one (the order is part of the corpus).
_FRAMES = (_Describer.intro_first, _Describer.someone_watches, _Describer.while_someone_gestures,
           _Describer.someone_gestures_as, _Describer.someone_follows, _Describer.backdrop_first)


def _action_speed_toward(b: _Builder, scene: SceneWords, toward: str) -> None:
    b.attr(scene.action, "action")
    b.attr(scene.speed, "speed")
    b.text(toward)
    b.attr(scene.direction, "direction")


def _action_toward_speed(b: _Builder, scene: SceneWords, toward: str) -> None:
    b.attr(scene.action, "action")
    b.text(toward)
    b.attr(scene.direction, "direction")
    b.attr(scene.speed, "speed")


def _speed_action_toward(b: _Builder, scene: SceneWords, toward: str) -> None:
    b.attr(scene.speed, "speed")
    b.attr(scene.action, "action")
    b.text(toward)
    b.attr(scene.direction, "direction")


def _moves_toward_and_action(b: _Builder, scene: SceneWords, toward: str) -> None:
    b.text("moves")
    b.attr(scene.speed, "speed")
    b.text(toward)
    b.attr(scene.direction, "direction")
    b.text("and")
    b.attr(scene.action, "action")


def _action_as_it_moves(b: _Builder, scene: SceneWords, toward: str) -> None:
    b.attr(scene.action, "action")
    b.text("as it moves")
    b.attr(scene.speed, "speed")
    b.text(toward)
    b.attr(scene.direction, "direction")


# The five orders of the motion words, in the order of their draw; the last one ("... as it moves ...")
# must stay last: motion(forms=4) leaves it out.
_MOTION_FORMS = (_action_speed_toward, _action_toward_speed, _speed_action_toward, _moves_toward_and_action,
                 _action_as_it_moves)
