"""The story bible: who the people of a story are, where it happens, and what must stay true.

Made right after the plot (stage 1 writes it, stage 2 structures it), it is the one source of
the cast: every scene's characters and every speaker come from it, and every later prompt
gets it. Its texts are reviewed by the text rules like every answer (text/review.py). Checks
by code hold the story to it:

- `premise_pronouns`: the premise's own pronouns for its protagonist ("her future self"
  makes the keeper *she*); the bible's first character must agree (re-asked otherwise).
- names the prose uses that the bible lacks: a scene draft that invents people is drawn again
  (`quality.cast_problems` against the bible's names; what remains is in the step metadata).
- `pronoun_slips`: a sentence about one character of the bible that refers to them with
  another character's pronouns set ("Mara ... his" when Mara is she/her).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .text.language import detect, is_english
from .text.segment import sentences, words

Pronouns = Literal["she/her", "he/him", "they/them"]
PRONOUNS: tuple[Pronouns, ...] = ("she/her", "he/him", "they/them")
_Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
# One character can be a whole word ("漁師" is a fisherman): a line must only not be blank.
_Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=240)]

_SHE = {"she", "her", "hers", "herself"}
_HE = {"he", "him", "his", "himself"}


class BibleCharacter(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: _Name
    role: _Line = Field(description="their part in the story, e.g. the lighthouse keeper")
    description: _Line = Field(description="one line: who they are")
    pronouns: Pronouns


CAST_MAX = 12  # people in a bible, those chapters introduce included


class StoryBible(BaseModel):
    """The cast as people, the setting, and facts a later scene must not contradict.

    Validation context (optional): `cast`, the plot's character names, every one of which must
    be in the bible; `pronouns`, what the premise says of its protagonist (the first of `cast`).
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    characters: list[BibleCharacter] = Field(min_length=1, max_length=CAST_MAX)
    setting: _Line = Field(description="where and when the story happens")
    facts: list[_Line] = Field(default_factory=list, max_length=6)

    @model_validator(mode="after")
    def _one_entry_each_and_the_premise_agrees(self, info: ValidationInfo) -> StoryBible:
        keys = [c.name.casefold() for c in self.characters]
        if len(set(keys)) != len(keys):
            raise ValueError("each character appears once in the bible; merge the entries that repeat a name")
        context: dict[str, Any] = info.context or {}
        cast = [str(n) for n in context.get("cast") or []]
        missing = [n for n in cast if n.casefold() not in keys]
        if missing:
            raise ValueError(
                f"the bible must describe every character of the plot; missing: {', '.join(missing)}"
            )
        wanted = context.get("pronouns")
        if wanted and cast:
            lead = self.character(cast[0])
            if lead is not None and lead.pronouns != wanted:
                raise ValueError(
                    f"the premise speaks of its protagonist {cast[0]} as {wanted}, not {lead.pronouns}; "
                    f"give {cast[0]} the pronouns {wanted}"
                )
        return self

    def grown(self, people: list[BibleCharacter]) -> StoryBible:
        """This bible with `people` a long story's chapters introduced, those it lacks, up to the
        limit of its cast (the bible is kept across chapters and grows)."""
        characters = list(self.characters)
        for person in people:
            if len(characters) < CAST_MAX and self.character(person.name) is None:
                if all(c.name.casefold() != person.name.casefold() for c in characters):
                    characters.append(person)
        return (
            self
            if len(characters) == len(self.characters)
            else self.model_copy(update={"characters": characters})
        )

    def character(self, name: str) -> BibleCharacter | None:
        return next((c for c in self.characters if c.name.casefold() == name.casefold()), None)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.characters]


def premise_pronouns(premise: str) -> Pronouns | None:
    """The pronouns the premise uses for its people, when it uses only one set."""
    said = set(words(premise))
    she, he = bool(said & _SHE), bool(said & _HE)
    if she and not he:
        return "she/her"
    if he and not she:
        return "he/him"
    return None


class FactCheck(BaseModel):
    """Which of the bible's facts (numbered from 1) a scene contradicts; context `facts`: how many."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    contradicted: list[int] = Field(default_factory=list, max_length=6)
    why: str = Field(default="", max_length=240, description="one sentence")

    @field_validator("contradicted")
    @classmethod
    def _numbers_of_facts(cls, numbers: list[int], info: ValidationInfo) -> list[int]:
        count = int((info.context or {}).get("facts") or 6)
        wrong = [n for n in numbers if not 1 <= n <= count]
        if wrong:
            raise ValueError(f"facts are numbered 1 to {count}; there is no fact {wrong[0]}")
        return sorted(set(numbers))


def bible_text(bible: StoryBible) -> str:
    """The bible as prompt text: one line a character, then the setting and the facts."""
    lines = [f"{c.name} ({c.pronouns}): {c.role}. {c.description}" for c in bible.characters]
    lines.append(f"Setting: {bible.setting}")
    lines += [f"Fact: {fact}" for fact in bible.facts]
    return "\n".join(lines)


def pronoun_slips(text: str, bible: StoryBible) -> list[str]:
    """Sentences about exactly one character that use the other binary pronoun set for them.
    English only: other languages' pronouns are not these words (an empty list for them)."""
    if not text.strip() or not is_english(detect(text)):
        return []
    firsts = {c.name.split()[0].casefold(): c for c in bible.characters}
    slips: list[str] = []
    for sentence in sentences(text):
        tokens = words(sentence)
        named = {firsts[w].name: firsts[w] for w in tokens if w in firsts}
        if len(named) != 1:
            continue
        (person,) = named.values()
        used = set(tokens)
        wrong = _HE if person.pronouns == "she/her" else _SHE if person.pronouns == "he/him" else set()
        if used & wrong and not used & (_SHE if person.pronouns == "she/her" else _HE):
            slips.append(f"{person.name} is {person.pronouns}: {sentence.strip()[:160]}")
    return slips


def plain_character(name: str, index: int, lead_pronouns: Pronouns | None) -> BibleCharacter:
    """A character made by code from the plot's cast (the bible's fallback, and a bible part's when
    the model cannot write it): the lead is the protagonist with the premise's pronouns."""
    return BibleCharacter(
        name=name,
        role="the protagonist" if index == 0 else "a character of the story",
        description=f"{name}, as the plot tells it.",
        pronouns=(lead_pronouns or "they/them") if index == 0 else "they/them",
    )


def plain_setting(premise: str, limit: int = 240) -> str:
    """The premise as the setting, whole words up to `limit` characters."""
    text = " ".join(premise.split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0]
    return text or "As the premise tells."


def plain_bible(premise: str, cast: list[str]) -> StoryBible:
    """A minimal bible made by code from the plot's cast, for when the model cannot write one: the
    names, the premise's pronouns for the lead (they/them otherwise), the premise as the setting."""
    lead = premise_pronouns(premise)
    people = [plain_character(name, i, lead) for i, name in enumerate(cast or ["Protagonist"])]
    return StoryBible(characters=people, setting=plain_setting(premise))
