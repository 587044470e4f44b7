"""Structuring in parts: for small models, stage 2 fills an object one small piece at a time.

A tiny model (the embedded SmolLM2-135M) writes shape-valid but meaningless JSON when asked
for a whole plot at once: copied names, one tension everywhere, blank names (measured: 1 valid
plot in 16 one-shot tries). Asked for one beat at a time, shown what it already wrote and
given a schema bounded to that piece, it does far better. Each `Part` is one such call: a
slice of the component's decoding schema (one source of truth: `decoding_schema(Model)`),
a model that validates the slice, and a cross-check against what is already assembled.
Every rule the full model checks across items (unique beat names, distinct purposes and
changes, no looping lines, each criterion once, overall within the scores) has a counterpart
here, in a part's schema or its cross-check, so a mistake is caught and re-asked at the part
that made it. The assembled object is still validated by the full model at the end, as in
one-shot mode.

Which providers structure in parts is their model profile's choice (providers/profiles.py:
`tiny`). The aids here (openers, unused initials) are for that profile only; names may hold any
letters, apostrophes and hyphens here as everywhere.

This module makes each component's plan: `plot_parts`, `scene_parts`, `dialogue_parts`,
`bible_parts`, `evaluation_parts` and `enhancement_parts` (with the beats' tension bands and
purpose openers). A part itself, its grammar and its cross-checks are in part.py; how long an
answer can be in answer_bound.py. Their names are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, create_model

from ..schemas import (
    EVALUATION_CRITERIA,
    ChapterPlan,
    CriterionScore,
    Dialogue,
    DialogueLine,
    Enhancement,
    Evaluation,
    PersonName,
    PlotBeat,
    PlotStructure,
    Scene,
    Suggestion,
    name_key,
    speaker_label,
)
from ..structuring import decoding_schema
from ..text.rules import similar
from .answer_bound import answer_token_bound as answer_token_bound
from .answer_bound import json_char_bound as json_char_bound

if TYPE_CHECKING:
    from ..bible import Pronouns
from .part import (
    INITIALS,
    LETTERS,
    NAME_PATTERN,
    UPPER_ACCENTED,
    CrossCheck,
    Part,
    PartPlan,
    all_of,
    differs,
    distinct,
    distinct_scalar,
    each_once,
    model_of,
    name_pattern,
    note_units,
    slice_schema,
)
from .part import PLAIN_CHARACTER as PLAIN_CHARACTER
from .part import PROSE_FIELDS as PROSE_FIELDS
from .part import instruction_echo as instruction_echo
from .part import notes_slice as notes_slice

SENTENCE = 30  # minLength of a field that must be a sentence, not a copied name
STRUCTURE_TYPES = ["three-act", "five-act", "hero's journey", "kishotenketsu", "in medias res"]


class CharacterName(BaseModel):
    name: PersonName


def tension_band(index: int, total: int) -> list[int]:
    """The tensions a beat may take at its place in the arc: calm start, a peak, a settling end."""
    climax = min(round(0.75 * (total - 1)), total - 2) if total >= 3 else total - 1
    if index == 0:
        return [1, 2, 3, 4]
    if index == climax:
        return [7, 8, 9, 10]
    if index == total - 1:
        return [2, 3, 4, 5, 6]
    return [3, 4, 5, 6, 7, 8]


# What a beat's purpose opens with, by its place in the arc (see `tension_band`). The 135M
# model, shown similar notes for every beat, writes the same purpose sentence again and again,
# even re-sampled (measured: 6 of 30 plots); an opener that names the beat's job makes each
# purpose about its own beat, and distinct from the others by construction.
FIRST_OPENER = "Sets up"
CLIMAX_OPENER = "At the climax,"
LAST_OPENER = "In the end,"
MIDDLE_OPENERS = (
    "Sets off the conflict as",
    "Raises the stakes as",
    "Complicates things as",
    "Turns the story as",
    "Deepens the trouble as",
    "Tests the hero as",
    "Reveals",
    "Pushes",
    "Tightens the knot as",
    "Shifts the balance as",
)
PURPOSE_CHARACTERS = LETTERS + "0-9 ,.;:'!?()-"


def beat_opener(index: int, total: int) -> str | None:
    """The words beat `index` of `total` opens its purpose with (None once the openers run out)."""
    band = tension_band(index, total)
    if index == 0:
        return FIRST_OPENER
    if index == total - 1:
        return LAST_OPENER
    if band[0] >= 7:
        return CLIMAX_OPENER
    middle = index - 1
    return MIDDLE_OPENERS[middle] if middle < len(MIDDLE_OPENERS) else None


def _opening(opener: str | None) -> str:
    return f', starting "{opener} ..."' if opener else ""


def purpose_schema(index: int, total: int) -> dict[str, Any]:
    """The purpose field of beat `index`: a sentence of 30 to 200 characters, after its opener."""
    bounds: dict[str, Any] = {"minLength": SENTENCE, "maxLength": 200}
    opener = beat_opener(index, total)
    if opener is None:
        return bounds
    rest = SENTENCE - len(opener) - 1, 200 - len(opener) - 1
    return {**bounds, "pattern": f"^{opener} [{PURPOSE_CHARACTERS}]{{{max(rest[0], 8)},{rest[1]}}}$"}


def plot_parts(beats: int, characters: int = 3) -> PartPlan:
    schema = decoding_schema(PlotStructure, counts={"beats": (beats, beats), "characters": (2, 4)})
    frame = slice_schema(
        schema,
        ["title", "structure_type"],
        {
            "structure_type": {"enum": STRUCTURE_TYPES, "maxLength": max(map(len, STRUCTURE_TYPES))},
            "title": {"maxLength": 60},
        },
    )
    frame_model = model_of(PlotStructure, ["title", "structure_type"])
    parts: PartPlan = [Part("the story's title and its structure type", frame, frame_model)]
    parts += [_character_part] * characters
    beat_schema = schema["properties"]["beats"]["items"]
    parts += [_beat_part(beat_schema, i, beats) for i in range(beats)]
    return parts


def chapter_parts(scenes: int, tension: int) -> PartPlan:
    """A chapter's scene beats, a part each: tensions around the chapter's own, and no arc openers (a
    chapter is a stretch of the story's arc; "In the end," would close every chapter)."""
    schema = decoding_schema(ChapterPlan, counts={"beats": (scenes, scenes)})
    beat_schema = schema["properties"]["beats"]["items"]
    band = list(range(max(1, tension - 2), min(10, tension + 2) + 1))
    return [_beat_part(beat_schema, i, scenes, band=band) for i in range(scenes)]


def _beat_part(
    beat_schema: dict[str, Any], i: int, beats: int, band: list[int] | None = None
) -> Callable[[dict[str, Any]], Part]:
    """Beat `i` of `beats`: in the story's arc (`tension_band`, an opener per place), or with the
    tensions of `band` and no opener."""
    opener = beat_opener(i, beats) if band is None else None
    band = band or tension_band(i, beats)
    what = (
        f"beat {i + 1} of {beats}: a short name (two to five words), its purpose (one sentence: what "
        f"happens in this beat and why it matters{_opening(opener)}) and its tension "
        f"({band[0]} to {band[-1]})"
    )
    purpose = purpose_schema(i, beats) if opener else {"minLength": SENTENCE, "maxLength": 200}

    def build(assembled: dict[str, Any]) -> Part:
        # Each beat name starts with a letter no earlier beat used: unique by construction.
        taken = {b["name"][0].upper() for b in assembled.get("beats", [])}
        initials = "".join(c for c in INITIALS if c not in taken) or INITIALS
        overrides: dict[str, dict[str, Any]] = {
            "name": {"maxLength": 48, "pattern": f"^[{initials}{UPPER_ACCENTED}][{LETTERS}' ,!?-]{{2,47}}$"},
            "purpose": purpose,
            "tension": {"enum": band},
        }
        item = slice_schema(beat_schema, ["name", "purpose", "tension"], overrides)
        check = all_of(distinct("name", "beat name"), distinct("purpose", "purpose for this beat"))
        return Part(what, item, PlotBeat, item_of="beats", check=check, slice_of=(i, beats))

    return build


def _character_part(assembled: dict[str, Any]) -> Part:
    """One more main character, whose initial differs from the others': distinct by construction."""
    taken = {name[0] for name in assembled.get("characters", [])}
    initials = "".join(c for c in INITIALS if c not in taken) or INITIALS
    pattern = name_pattern(initials)
    schema = slice_schema({"properties": {}}, ["name"], {"name": {"maxLength": 30, "pattern": pattern}})
    what = "the name of one more main character (a first name, maybe a last name)"
    return Part(what, schema, CharacterName, item_of="characters", scalar="name")


def scene_parts(cast: list[str]) -> list[Part]:
    enums = {"characters": cast} if cast else {}
    count = (1, min(4, len(cast))) if cast else (1, 4)
    schema = decoding_schema(Scene, enums=enums, counts={"characters": count})
    overrides: dict[str, dict[str, Any]] = {
        "title": {"maxLength": 60},
        "setting": {"maxLength": 100},
        "summary": {"maxLength": 300},
    }
    if not cast:
        overrides["characters"] = {"items": {"type": "string", "pattern": NAME_PATTERN}}
    return [
        Part(
            "the scene's title and its setting (where and when)",
            slice_schema(schema, ["title", "setting"], overrides),
            model_of(Scene, ["title", "setting"]),
        ),
        Part(
            "the scene's summary: two or three sentences of what happens",
            slice_schema(schema, ["summary"], overrides),
            model_of(Scene, ["summary"]),
            check=differs("summary", "title"),
            from_notes=_summary_from_draft,
            notes_only=True,
        ),
        Part(
            "the characters who appear in the scene, each named once",
            slice_schema(schema, ["characters"], overrides),
            model_of(Scene, ["characters"]),
            check=each_once("characters"),
            # who of the cast the draft names is for code to read, not for a model to guess
            from_notes=_cast_named(cast),
            code_first=bool(cast),
        ),
    ]


def script_lines(draft: str, cast: list[str]) -> list[tuple[str, str]]:
    """The draft's lines written as a script, "Name: words" or "Name (smiling): words", by a cast
    member: (the cast's spelling of the name, the words without the label or a leading direction),
    each said once."""
    found: list[tuple[str, str]] = []
    for line in draft.splitlines():
        label = re.match(r"\s*([^:()\n]{1,40}?)\s*(?:\([^)\n]{0,60}\))?\s*:\s*(.+)", line)
        if not label:
            continue
        speaker = next((n for n in cast if name_key(n) == name_key(label.group(1))), None)
        words = re.sub(r"^\([^)\n]{0,60}\)\s*", "", label.group(2)).strip()
        # A line the script already said (SmolLM2's scripts loop: "I am Alec, I shall tell you
        # about my past and future." three times, by three speakers) is not a new line.
        if speaker and words and not any(similar(words, said) for _, said in found):
            found.append((speaker, words))
    return found


def dialogue_parts(cast: list[str], lines: int = 6, draft: str = "") -> list[Part]:
    """One part per line. When the draft is a script of at least two lines by the cast, each part
    is one of its lines: its speaker fixed, the model shown only those words (the draft's own
    attribution, and nothing else to copy). Otherwise the cast speaks in turn, each part shown its
    slice of the draft."""
    schema = decoding_schema(Dialogue, enums={"speaker": cast}, counts={"lines": (lines, lines)})
    item = schema["properties"]["lines"]["items"]
    script = script_lines(draft, cast)[:lines]
    if len(script) < 2:
        script = []
    # No more lines than the draft has lines (or sentences) to slice: asked for four lines from a
    # two-sentence draft, SmolLM2 said its second sentence three times, by three speakers.
    if script:
        count = len(script)
    else:
        count = max(2, min(lines, note_units(draft))) if draft.strip() else lines
    parts = []
    for i in range(count):
        # The script's speaker, or turn-taking (the cast speaks in turn: nobody answers themselves).
        speaker, words = script[i] if script else (cast[i % len(cast)], None)
        part_schema = slice_schema(
            item, ["speaker", "text"], {"speaker": {"enum": [speaker]}, "text": {"maxLength": 160}}
        )
        what = f"line {i + 1} of {count} of the dialogue: " + (
            "who speaks and what they say (new words, not a repeat)" if words is None else f"{speaker}'s line"
        )
        parts.append(
            Part(
                what,
                part_schema,
                DialogueLine,
                item_of="lines",
                check=all_of(distinct("text", "line", allowed=1), _no_speaker_label(cast)),
                slice_of=None if script else (i, count),
                own_notes=words,
                optional=i >= 2,  # a dialogue is at least an exchange
                # a script's line is its own words: code copies them, the model is not asked
                from_notes=_script_line(speaker) if words is not None else None,
                code_first=words is not None,
            )
        )
    return parts


def _script_line(speaker: str) -> Callable[[str], dict[str, Any]]:
    """A script line's part made from its own words: whole sentences up to a line's 160 characters
    (none when its first sentence is longer: then the model is asked)."""
    from ..drafts import sentences

    def make(words: str) -> dict[str, Any]:
        kept = ""
        for sentence in sentences(words) or [words]:
            longer = f"{kept} {sentence.strip()}".strip()
            if len(longer) > 160:
                break
            kept = longer
        return {"speaker": speaker, "text": kept}

    return make


def _cast_named(cast: list[str]) -> Callable[[str], dict[str, Any]]:
    """A scene's characters made from its draft: the cast members it names, in the cast's order,
    at most four (none named: no value, the model is asked)."""
    from ..text.people_rules import names_person

    def make(draft: str) -> dict[str, Any]:
        return {"characters": [name for name in cast if names_person(name, draft)][:4]}

    return make


def _no_speaker_label(cast: list[str]) -> CrossCheck:
    """Dialogue's rule at the part: a line's text does not open with another speaker's label."""

    def check(value: dict[str, Any], assembled: dict[str, Any]) -> str | None:
        label = speaker_label(str(value.get("text", "")), cast)
        if label:
            return (
                f"the text starts with {label.strip() + ':'!r}, a line of {label.strip()}; write only the "
                f"words {value.get('speaker')} says"
            )
        return None

    return check


def evaluation_parts() -> PartPlan:
    schema = decoding_schema(Evaluation, counts={"scores": (len(EVALUATION_CRITERIA),) * 2})
    item = schema["properties"]["scores"]["items"]
    parts = []
    for criterion in EVALUATION_CRITERIA:
        part_schema = slice_schema(
            item, ["score", "rationale"], {"rationale": {"minLength": SENTENCE, "maxLength": 200}}
        )
        parts.append(
            Part(
                f"the score (1 to 10) for {criterion} and the reason in one sentence",
                part_schema,
                model_of(CriterionScore, ["score", "rationale"]),
                item_of="scores",
                extra={"criterion": criterion},
                # A copied rationale is marked by Evaluation (not reliable), not re-asked: the
                # review of a story must not fail the story (measured: SmolLM2 copies on re-ask).
                check=differs("rationale", "criterion", {"criterion": criterion}),
            )
        )
    plan: PartPlan = [
        *parts,
        lambda assembled: evaluation_summary_part([s["score"] for s in assembled["scores"]]),
    ]
    return plan


def evaluation_summary_part(scores: list[int]) -> Part:
    """The overall score is bounded by the criterion scores (Evaluation checks it is within ±1)."""
    low, high = max(1, min(scores) - 1), min(10, max(scores) + 1)
    schema = decoding_schema(Evaluation)
    part_schema = slice_schema(
        schema,
        ["overall", "summary"],
        {
            "overall": {"enum": list(range(low, high + 1))},
            "summary": {"minLength": SENTENCE, "maxLength": 300},
        },
    )
    return Part(
        "the overall score and a one-sentence summary of the evaluation",
        part_schema,
        model_of(Evaluation, ["overall", "summary"]),
    )


def enhancement_parts(suggestions: int = 2, targets: list[str] | None = None) -> list[Part]:
    """Suggestions one at a time, then the summary; `targets` (the story's scenes and people, as
    "Scene 2: Title" and names) bound what a suggestion may target, so a revision can apply it."""
    enums = {"target": targets} if targets else {}
    schema = decoding_schema(Enhancement, counts={"suggestions": (suggestions, suggestions)}, enums=enums)
    item = slice_schema(
        schema["properties"]["suggestions"]["items"],
        ["target", "problem", "change"],
        {
            "target": {} if targets else {"maxLength": 60},
            "problem": {"minLength": SENTENCE, "maxLength": 200},
            "change": {"minLength": SENTENCE, "maxLength": 200},
        },
    )
    parts = [
        Part(
            f"suggestion {i + 1} of {suggestions}: what to improve (a beat or scene), the problem, and the "
            "change that fixes it",
            item,
            Suggestion,
            item_of="suggestions",
            check=all_of(
                differs("change", "problem", loose=True),
                distinct("change", "change"),
                distinct("problem", "problem"),
            ),
            slice_of=(i, suggestions),
            optional=i >= 1,
        )
        for i in range(suggestions)
    ]
    parts.append(
        Part(
            "a one-sentence summary of the suggested changes",
            slice_schema(schema, ["summary"]),
            model_of(Enhancement, ["summary"]),
        )
    )
    return parts


def bible_parts(
    cast: list[str], pronouns: Pronouns | None = None, facts: int = 2, premise: str = ""
) -> PartPlan:
    """One part per character (its name fixed; the premise's pronouns for the first), the setting,
    then optional facts. A character or setting the model cannot write is made by code (a plain
    one, its description the notes' sentence about that character where there is one)."""
    from ..bible import PRONOUNS, BibleCharacter, StoryBible, plain_setting

    schema = decoding_schema(StoryBible, counts={"characters": (len(cast), len(cast))})
    item = schema["properties"]["characters"]["items"]
    plan: PartPlan = []
    for index, name in enumerate(cast):
        choices = [pronouns] if pronouns and index == 0 else list(PRONOUNS)
        overrides: dict[str, dict[str, Any]] = {
            "role": {"maxLength": 80},
            "description": {"minLength": 12, "maxLength": 160},
            "pronouns": {"enum": choices},
        }
        plan.append(
            Part(
                f"who {name} is: their role in the story, one sentence about them, and their pronouns",
                slice_schema(item, ["role", "description", "pronouns"], overrides),
                model_of(BibleCharacter, ["role", "description", "pronouns"]),
                item_of="characters",
                extra={"name": name},
                check=distinct("description", "description of this character"),
                # Its own line of the notes (one a character, then the setting), not the others'
                # answers: a tiny model copies the description it was just shown.
                slice_of=(index, len(cast) + 1),
                from_notes=_character_from_notes(cast, index, pronouns),
            )
        )
    plan.append(
        Part(
            "the setting: where and when the story happens, in one sentence",
            slice_schema(schema, ["setting"], {"setting": {"maxLength": 160}}),
            model_of(StoryBible, ["setting"]),
            slice_of=(len(cast), len(cast) + 1),
            from_notes=(lambda notes: {"setting": plain_setting(premise, 160)}) if premise.strip() else None,
        )
    )
    fact = slice_schema(
        {"properties": {"fact": {"type": "string", "minLength": SENTENCE, "maxLength": 160}}}, ["fact"]
    )
    fact_model = create_model("BibleFact", fact=(str, ...))
    plan += [
        Part(
            f"fact {i + 1}: one thing every scene must respect",
            fact,
            fact_model,
            item_of="facts",
            scalar="fact",
            optional=True,
            check=distinct_scalar("facts"),
        )
        for i in range(facts)
    ]
    return plan


def _character_from_notes(
    cast: list[str], index: int, pronouns: Pronouns | None
) -> Callable[[str], dict[str, Any]]:
    """Character `index` made by code: the plain one (bible.plain_character), described by the
    notes' first sentence that names them and no one else of the cast, where there is one."""
    from ..bible import plain_character
    from ..drafts import sentences
    from ..text.segment import words

    name = cast[index]
    others = [other for other in cast if other != name]

    def make(notes: str) -> dict[str, Any]:
        plain = plain_character(name, index, pronouns).model_dump(include={"role", "description", "pronouns"})
        for sentence in sentences(notes):
            said = sentence.strip()
            named = name in said and not any(other in said for other in others)
            if named and 12 <= len(said) <= 160 and len(words(said)) >= 4:
                return {**plain, "description": said}
        return plain

    return make


def _summary_from_draft(notes: str) -> dict[str, Any]:
    """A scene's summary made from its notes: the draft's first whole sentences (up to 300 chars)."""
    from ..drafts import clean_prose, sentences

    draft = "\n".join(line for line in notes.splitlines() if not line.startswith("Plot beat:"))
    summary = ""
    for sentence in sentences(clean_prose(draft)):
        if len(summary) + len(sentence) + 1 > 300:
            break
        summary = f"{summary} {sentence}".strip()
        if len(summary) >= 120:
            break
    return {"summary": summary}
