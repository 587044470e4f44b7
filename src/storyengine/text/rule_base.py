"""What every text rule is made of: the kinds of field a rule applies to (by the field's key), the
`Context` a rule may know beyond the text, the `Hit` it returns, the `Rule` itself, and `RuleList`,
the rules of one module in the order they run (its `rule` decorator registers one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# -- the fields --

PROSE = frozenset({"purpose", "description", "setting", "summary", "fact"})
# What the evaluation and the enhancement write about the story: talk about the story is their job.
CRITIQUE = frozenset({"rationale", "problem", "change", "critique"})
SPEECH = frozenset({"text"})
LABELS = frozenset({"title", "name", "structure_type", "mood", "direction", "target", "role", "beat"})
PEOPLE = frozenset({"character", "speaker"})
ALL = PROSE | CRITIQUE | SPEECH | LABELS | PEOPLE
WRITTEN = PROSE | CRITIQUE | SPEECH  # sentences, which must not be cut off
# A scene's prose (drafts.clean_prose made it: no loops, no unfinished sentence): only junk rules.
BODY = frozenset({"prose"})


@dataclass(frozen=True)
class Context:
    """What a rule may know beyond the text: the story's language, its cast, and the texts the
    prompt gave as instructions."""

    language: str = ""  # "" until detected (text/language.py); English-only rules need "en"
    cast: tuple[str, ...] = ()
    instructions: tuple[str, ...] = ()  # texts a title or setting must not copy (a beat's purpose)
    beat_name: str = ""  # the scene's beat: its title when the title copied the instructions
    earlier: tuple[str, ...] = ()  # what a purpose must not repeat (a long story's chapter before)
    # (field, text): what a required field whose text is unusable becomes (the bible's setting: the
    # premise, as a plain bible has it)
    fallbacks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Hit:
    evidence: str
    message: str
    repaired: str | None = None
    unusable: bool = False


@dataclass(frozen=True)
class Rule:
    name: str
    fields: frozenset[str]
    languages: frozenset[str] | None
    check: Callable[[str, Context], Hit | None] = field(compare=False)

    def applies(self, key: str, language: str) -> bool:
        return key in self.fields and (self.languages is None or language in self.languages)


Check = Callable[[str, Context], Hit | None]


class RuleList(list[Rule]):
    """Rules in the order they run; `@rules.rule(name, fields, languages)` appends one."""

    def rule(
        self, name: str, fields: frozenset[str], languages: frozenset[str] | None = None
    ) -> Callable[[Check], Check]:
        def register(check: Check) -> Check:
            self.append(Rule(name, fields, languages, check))
            return check

        return register


ENGLISH = frozenset({"en"})


def clip(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
