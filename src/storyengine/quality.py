"""The quality of a story, measured by code; and the draft checks and prose cleaning the pipeline uses.

`quality_report(story)` computes, from the typed `Story` alone (no model call):

- repetition: the share of the reader's sentences (the prose of every scene, else its summary,
  and every dialogue line) that repeat an earlier sentence word for word;
- distinct-1 / distinct-2: distinct words (word pairs) over all words (pairs) of that text;
- fields with JSON debris, word loops, names that are not names, prose fields cut off (the
  rules of sanity.py, counted rather than raised: an old story.json may break them) and
  prose fields without final punctuation (a softer measure than "cut off");
- copied rationales and suggestions (sanity.similar);
- premise coverage: the share of the premise's content words (not in STOPWORDS, 3+ letters,
  compared by a crude stem) found in the story (its plot, scenes, prose and dialogue; not in
  the model's evaluation or enhancement of it);
- cast consistency: speakers outside their scene's cast; capitalised words used as names in a
  scene's prose (not at a sentence start) that no cast list holds;
- the story bible (when the story has one): speakers who are not in it; pronoun slips, sentences
  about one character of the bible that use the other binary pronoun set for them; the facts a
  scene's kept draft still contradicts by the model's check (from the step's metadata);
- words of prose per scene (what story.md shows: the prose, else the summary);
- tension: per scene, tension words (TENSION_WORDS) and exclamation marks per 100 words of its
  prose and dialogue; against the plan, the Spearman rank correlation between the planned
  tension of each scene's beat and that measure (None with fewer than 3 scenes or a flat side);
- the model's rubric: marked unreliable when every criterion got one score, or when the model
  gave 8 or more overall to a story that fails the code's checks (GOALS).

The pipeline's draft helpers live in drafts.py and are re-exported here: `clean_prose(text)`
turns a stage-1 draft into the prose a reader gets, `draft_problems(...)` says why a draft
should be drawn again, `cast_problems(...)` what names a scene's cast lacks.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .bible import premise_pronouns, pronoun_slips
from .drafts import STOPWORDS, cast_problems, clean_prose, draft_problems, draft_score, names_in
from .schemas import Story, name_key
from .text.language import detect, is_english
from .text.review import REPAIRS, review
from .text.rules import Context, findings_in, first_similar
from .text.segment import content_units, content_words, ends_a_sentence, sentences, stem, word_key, words

TENSION_WORDS = frozenset(
    """afraid alarm anger angry attack blood break breaks broke chase crash cries cry danger dark
    dead death desperate die dies escape explode fear fight fire flee gun hide horror hurt kill
    lost panic rage risk run runs scream screams shout shouts shock sudden suddenly terror threat
    trap trapped warn warning wound""".split()
)
PROSE_FIELDS = (
    "purpose",
    "description",
    "setting",
    "summary",
    "text",
    "rationale",
    "problem",
    "change",
    "fact",
    "critique",
)
# Rules whose findings are junk in a delivered story: each must be repaired or listed as kept.
JUNK_RULES = frozenset(
    {"control", "null_text", "timestamp", "debris", "gibberish", "loop", "leading_mark", "meta_talk",
     "copied_instruction"}
)  # fmt: skip
# The issue's goals, as the checks a story must pass (name -> description).
GOALS = {
    "debris": "no field with JSON debris",
    "cut_off": "at most 5 % of prose fields cut off",
    "repetition": "at most 2 % of sentences repeated verbatim",
    "copied": "no copied rationales or suggestions",
    "names": "every speaker a cast member with a person's name",
    "bible": "no speaker outside the story bible, no pronoun that contradicts it",
    "prose": "at least 150 words of prose per scene (median)",
    "premise": "at least half of the premise's content words in the story",
    "text": "every field with debris, gibberish, a loop, meta talk or copied instructions is repaired or "
    "listed as a kept finding",
    "lead": "the premise's lead appears, with the premise's pronouns",
}
HIGH_SCORE = 8


# -- reading a story --


class NotAStory(ValueError):
    """The text is not a storyengine Story (not JSON, or not the shape of one)."""


def load_story(text: str) -> tuple[Story, bool]:
    """The Story in `text` (story.json), and whether the text rules find nothing in it that code
    cannot repair (text/review.py). Its shape must be a Story's; its words never stop it
    loading, so that it can be measured. Raises NotAStory.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotAStory(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise NotAStory(f"a JSON {type(data).__name__}, not a story object")
    try:
        story = Story.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise NotAStory(f"{exc.error_count()} problem(s), first at {where}: {first['msg']}") from None
    reviewed = review(Story, data, Context(language=story_language(story)))
    return story, not reviewed.open


# -- the report --


class SceneQuality(BaseModel):
    index: int
    title: str
    prose_words: int = Field(description="words of prose story.md shows (the prose, else the summary)")
    dialogue_lines: int
    planned_tension: int | None
    tension_words_per_100: float


class QualityReport(BaseModel):
    """Measures of one story, computed by code. `failed` names the GOALS the story misses."""

    scenes: list[SceneQuality]
    sentences: int
    repeated_sentences: float = Field(description="share of sentences repeating an earlier one verbatim")
    distinct_1: float
    distinct_2: float
    prose_fields: int
    cut_off_fields: list[str]
    unpunctuated_fields: list[str]
    debris_fields: list[str]
    loop_fields: list[str]
    non_names: list[str]
    non_speech_lines: list[str]
    copied: list[str]
    premise_words: list[str]
    premise_words_found: list[str]
    premise_coverage: float
    speakers_outside_cast: list[str]
    names_not_in_cast: list[str]
    speakers_outside_bible: list[str] = Field(default_factory=list)
    pronoun_slips: list[str] = Field(default_factory=list)
    fact_contradictions: list[str] = Field(default_factory=list)
    language: str = "en"
    gibberish_fields: list[str] = Field(default_factory=list)
    meta_talk_fields: list[str] = Field(default_factory=list)
    copied_instruction_fields: list[str] = Field(default_factory=list)
    leading_mark_fields: list[str] = Field(default_factory=list)
    null_text_fields: list[str] = Field(default_factory=list)
    premise_names_missing: list[str] = Field(
        default_factory=list, description="people the premise names, never in the story"
    )
    lead_other_pronouns: float | None = Field(
        default=None,
        description="share of the prose's he/she pronouns in the set the premise does not give its lead",
    )
    repairs: list[str] = Field(default_factory=list, description="what code repaired in the model's answers")
    kept_findings: list[str] = Field(
        default_factory=list, description="findings kept with the text after a re-ask"
    )
    unlisted_findings: list[str] = Field(
        default_factory=list, description="junk in the story that is neither repaired nor a kept finding"
    )
    prose_words_median: float
    tension_correlation: float | None
    rubric_scores: dict[str, int]
    rubric_overall: int | None  # None: the story has no evaluation (a gap)
    rubric_reliable: bool
    rubric_notes: list[str]
    failed: list[str]

    @property
    def cut_off_share(self) -> float:
        return len(self.cut_off_fields) / self.prose_fields if self.prose_fields else 0.0

    def measures(self) -> dict[str, float | int | None]:
        """The report's numbers, flat (what `bench quality` takes medians of)."""
        return {
            "repeated sentences %": round(100 * self.repeated_sentences, 1),
            "distinct-1": self.distinct_1,
            "distinct-2": self.distinct_2,
            "prose fields cut off %": round(100 * self.cut_off_share, 1),
            "prose fields unpunctuated %": round(
                100 * len(self.unpunctuated_fields) / self.prose_fields if self.prose_fields else 0, 1
            ),
            "fields with debris": len(self.debris_fields),
            "fields with loops": len(self.loop_fields),
            "names that are not names": len(self.non_names),
            "dialogue lines that are not speech": len(self.non_speech_lines),
            "copied rationales/suggestions": len(self.copied),
            "premise coverage %": round(100 * self.premise_coverage, 1),
            "speakers outside the cast": len(self.speakers_outside_cast),
            "names in prose not in the cast": len(self.names_not_in_cast),
            "speakers outside the bible": len(self.speakers_outside_bible),
            "pronoun slips": len(self.pronoun_slips),
            "fact contradictions": len(self.fact_contradictions),
            "fields with gibberish": len(self.gibberish_fields),
            "fields with meta talk": len(self.meta_talk_fields),
            "fields copying instructions": len(self.copied_instruction_fields),
            "fields starting with punctuation": len(self.leading_mark_fields),
            "fields that say null": len(self.null_text_fields),
            "premise names missing": len(self.premise_names_missing),
            "lead's other pronouns %": None
            if self.lead_other_pronouns is None
            else round(100 * self.lead_other_pronouns, 1),
            "repaired by code": len(self.repairs),
            "kept with a warning": len(self.kept_findings),
            "junk not repaired or listed": len(self.unlisted_findings),
            "prose words per scene (median)": self.prose_words_median,
            "tension: plan vs realised (Spearman)": self.tension_correlation,
            "rubric overall": self.rubric_overall,
            "rubric reliable": int(self.rubric_reliable),
            "goals failed": len(self.failed),
        }

    def as_rows(self) -> list[tuple[str, str]]:
        """(measure, value) rows for a table, with the lists that explain the numbers."""
        rows = [(name, "-" if value is None else f"{value:g}") for name, value in self.measures().items()]
        details = {
            "cut off": self.cut_off_fields,
            "debris": self.debris_fields,
            "loops": self.loop_fields,
            "not names": self.non_names,
            "not speech": self.non_speech_lines,
            "copied": self.copied,
            "premise words missing": [w for w in self.premise_words if w not in self.premise_words_found],
            "names not in the cast": self.names_not_in_cast,
            "speakers outside the bible": self.speakers_outside_bible,
            "pronoun slips": self.pronoun_slips,
            "fact contradictions": self.fact_contradictions,
            "gibberish": self.gibberish_fields,
            "meta talk": self.meta_talk_fields,
            "copied instructions": self.copied_instruction_fields,
            "starting with punctuation": self.leading_mark_fields,
            "null as text": self.null_text_fields,
            "premise names missing": self.premise_names_missing,
            "repaired": self.repairs,
            "kept with a warning": self.kept_findings,
            "junk not repaired or listed": self.unlisted_findings,
            "rubric notes": self.rubric_notes,
            "goals missed": [GOALS[g] for g in self.failed],
        }
        rows += [(k, "; ".join(v[:8]) + (" …" if len(v) > 8 else "")) for k, v in details.items() if v]
        return rows

    def as_table(self) -> str:
        """A plain-text table (measure, value), one row a line."""
        rows = self.as_rows()
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows) + "\n"


def _fields(story: Story) -> Iterator[tuple[str, str, str]]:
    """(where, key, text) for every string a model wrote; key is the field's name for the text rules."""
    plot = story.plot
    yield "plot.title", "title", plot.title
    yield "plot.structure_type", "structure_type", plot.structure_type
    for i, name in enumerate(plot.characters):
        yield f"plot.characters[{i}]", "character", name
    if story.bible is not None:
        for i, person in enumerate(story.bible.characters):
            yield f"bible.characters[{i}].name", "character", person.name
            yield f"bible.characters[{i}].role", "role", person.role
            yield f"bible.characters[{i}].description", "description", person.description
        yield "bible.setting", "setting", story.bible.setting
        for i, fact in enumerate(story.bible.facts):
            yield f"bible.facts[{i}]", "fact", fact
    for i, beat in enumerate(plot.beats):
        yield f"plot.beats[{i}].name", "name", beat.name
        yield f"plot.beats[{i}].purpose", "purpose", beat.purpose
        if beat.description:
            yield f"plot.beats[{i}].description", "description", beat.description
    for i, item in enumerate(story.scenes):
        scene = item.scene
        for key in ("title", "setting", "summary", "mood", "beat"):
            value = getattr(scene, key)
            if value:
                yield f"scenes[{i}].{key}", key, value
        for j, name in enumerate(scene.characters):
            yield f"scenes[{i}].characters[{j}]", "character", name
        if item.prose:
            yield f"scenes[{i}].prose", "prose", item.prose
        for j, line in enumerate(item.dialogue.lines):
            yield f"scenes[{i}].lines[{j}].speaker", "speaker", line.speaker
            yield f"scenes[{i}].lines[{j}].text", "text", line.text
            if line.direction:
                yield f"scenes[{i}].lines[{j}].direction", "direction", line.direction
    if story.evaluation is not None:
        for i, score in enumerate(story.evaluation.scores):
            yield f"evaluation.scores[{i}].rationale", "rationale", score.rationale
        yield "evaluation.summary", "critique", story.evaluation.summary
    if story.enhancement is not None:
        for i, s in enumerate(story.enhancement.suggestions):
            yield f"enhancement.suggestions[{i}].target", "target", s.target
            yield f"enhancement.suggestions[{i}].problem", "problem", s.problem
            yield f"enhancement.suggestions[{i}].change", "change", s.change
        yield "enhancement.summary", "critique", story.enhancement.summary


def scene_prose(item: Any) -> str:
    """What a reader gets as a scene's prose: its prose, else its summary."""
    return (item.prose or "").strip() or item.scene.summary


def _spearman(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result

    rx, ry = ranks(xs), ranks(ys)
    return round(statistics.correlation(rx, ry), 3)


def _tension(text: str) -> float:
    tokens = words(text)
    if not tokens:
        return 0.0
    hits = sum(1 for w in tokens if w in TENSION_WORDS or stem(w) in TENSION_WORDS) + text.count("!")
    return round(100 * hits / len(tokens), 2)


def story_language(story: Story) -> str:
    """The language of a story: detected once, from its premise and the prose of its first scenes."""
    told = " ".join([story.premise, *(scene_prose(item) for item in story.scenes[:2])])
    return detect(told)


def _names_not_in_cast(story: Story, language: str) -> list[str]:
    if not is_english(language):
        return []  # capitalised words are names only in English
    cast = {w.casefold() for name in story.plot.characters for w in name.split()}
    for item in story.scenes:
        cast |= {w.casefold() for name in item.scene.characters for w in name.split()}
    known = {w.casefold() for w in re.findall(r"[A-Z][\w'’-]+", f"{story.premise} {story.plot.title}")}
    found: set[str] = set()
    for item in story.scenes:
        found.update(names_in(item.prose or "", frozenset(cast | known)))
    return sorted(found)


FACT_PROBLEM = "contradicts the bible's fact"
_HONORIFIC_NAME = re.compile(r"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof|Captain|Capt|Lady|Lord|Sir)\.?\s+([A-Z][\w'’-]+)")
_SHE, _HE = {"she", "her", "hers", "herself"}, {"he", "him", "his", "himself"}


def _premise_names_missing(story: Story, told: str, language: str) -> list[str]:
    """People the premise names ("Mr. Dorbenson finds a book…": Dorbenson) whom the story never
    mentions. English: a name after an honorific, or a capitalised word inside a sentence."""
    if not is_english(language):
        return []
    named = set(_HONORIFIC_NAME.findall(story.premise))
    named |= set(names_in(story.premise))
    present = {w.casefold() for w in words(told)}
    return sorted(n for n in named if n.casefold() not in present)


def _lead_other_pronouns(story: Story, language: str) -> float | None:
    """The share of the prose's he/she pronouns that are of the set the premise does not give its
    lead, when the premise speaks of its people with one set ("her future self"). English only;
    None without a premise set or with fewer than five such pronouns."""
    wanted = premise_pronouns(story.premise) if is_english(language) else None
    if wanted not in ("she/her", "he/him"):
        return None
    tokens = [w for item in story.scenes for w in words(scene_prose(item))]
    she = sum(1 for w in tokens if w in _SHE)
    he = sum(1 for w in tokens if w in _HE)
    if she + he < 5:
        return None
    return round((he if wanted == "she/her" else she) / (she + he), 3)


def _story_path(step: str) -> str | None:
    """Where a step's object sits in the story: "scene.2" -> "scenes[2].", "plot" -> "plot."."""
    parts = step.split(".")
    if len(parts) == 1 and parts[0] in ("plot", "bible", "evaluation", "enhancement"):
        return f"{parts[0]}."
    if len(parts) == 2 and parts[0] in ("scene", "dialogue") and parts[1].isdigit():
        return f"scenes[{parts[1]}]."
    if len(parts) == 3 and parts[0] == "scene" and parts[1].isdigit() and parts[2] == "draft":
        return f"scenes[{parts[1]}]."  # its prose
    return None


def step_findings(story: Story) -> list[dict[str, str]]:
    """The text findings of the steps that made the story, each with its field's path in the story."""
    found = []
    for step, meta in (story.meta.get("steps") or {}).items():
        prefix = _story_path(step)
        if prefix is None or not isinstance(meta, dict):
            continue
        for finding in meta.get("findings") or []:
            found.append({**finding, "field": prefix + str(finding.get("field", ""))})
    return found


def _fact_contradictions(story: Story) -> list[str]:
    """What the model's fact check still found in each scene's kept draft (its step metadata)."""
    steps = story.meta.get("steps") or {}
    found = []
    for i in range(len(story.scenes)):
        problems = (steps.get(f"scene.{i}.draft") or {}).get("draft_problems") or []
        found += [f"scenes[{i}]: {p}" for p in problems if str(p).startswith(FACT_PROBLEM)]
    return found


def _copies(story: Story) -> list[str]:
    copied = []
    scores = story.evaluation.scores if story.evaluation is not None else []
    pair = first_similar([s.rationale for s in scores])
    if pair:
        copied.append(f"rationales of {scores[pair[0]].criterion} and {scores[pair[1]].criterion}")
    suggestions = story.enhancement.suggestions if story.enhancement is not None else []
    for key in ("change", "problem"):
        pair = first_similar([getattr(s, key) for s in suggestions])
        if pair:
            copied.append(f"suggestions[{pair[0]}] and suggestions[{pair[1]}]: same {key}")
    return copied


def quality_report(story: Story) -> QualityReport:
    """The quality report of `story` (see the module docstring for each measure)."""
    language = story_language(story)
    context = Context(language=language)
    lists: dict[str, list[str]] = {
        name: []
        for name in ("debris", "loop", "not_a_name", "not_speech", "cut_off", "gibberish", "meta_talk",
                     "copied_instruction", "leading_mark", "null_text")
    }  # fmt: skip
    unpunctuated: list[str] = []
    junk: list[str] = []
    prose_fields = 0
    beats = {name_key(b.name): b.purpose for b in story.plot.beats}
    for where, key, text in _fields(story):
        here = context
        if where.startswith("scenes[") and key in ("title", "setting"):
            index = int(where[len("scenes[") : where.index("]")])
            purpose = beats.get(name_key(story.scenes[index].scene.beat or ""))
            here = Context(language=language, instructions=(purpose,) if purpose else ())
        hits = dict(findings_in(text, key, here))
        for name in hits:
            shown = f"{where}: {text[:60]!r}" if name == "not_a_name" else where
            if name in lists:
                lists[name].append(shown)
            elif name in ("timestamp", "control"):
                lists["debris"].append(where)
            if name in JUNK_RULES:
                junk.append(where)
        if key in PROSE_FIELDS:
            prose_fields += 1
            # A setting is a place and a time, not a sentence; and outside English a summary or a
            # purpose without a final mark is the convention of lists (Japanese, Chinese, Arabic).
            if (
                key != "setting"
                and is_english(language)
                and "cut_off" not in hits
                and not ends_a_sentence(text)
            ):
                unpunctuated.append(where)
    recorded = step_findings(story)
    kept_fields = {f["field"] for f in recorded if f.get("action") in ("kept", "reask")}
    repairs = [f"{f['field']}: {f.get('rule')}" for f in recorded if f.get("action") in REPAIRS]
    kept_list = [
        f"{f['field']}: {f.get('rule')}: {f.get('message', '')[:80]}"
        for f in recorded
        if f.get("action") in ("kept", "reask")
    ]

    reading = []
    for item in story.scenes:
        reading += sentences(scene_prose(item))
        reading += [s for line in item.dialogue.lines for s in sentences(line.text)]
    keys = [word_key(s) for s in reading if word_key(s)]
    repeated = len(keys) - len(set(keys))
    tokens = [w for s in reading for w in words(s)]
    bigrams = list(itertools.pairwise(tokens))

    # The story itself (plan, scenes, prose, dialogue): not the model's evaluation of it.
    told = [text for where, _, text in _fields(story) if where.startswith(("plot.", "scenes["))]
    everything = " ".join(told + [scene_prose(item) for item in story.scenes])
    premise_words = content_words(story.premise, language)
    if premise_words:  # a script with spaces: words, compared by their stems
        present = {stem(w, language) for w in words(everything)}
        found = [w for w in premise_words if stem(w, language) in present]
    else:  # without spaces (Japanese, Chinese, Thai): the runs or pairs that carry content
        premise_words = content_units(story.premise, language)
        units = set(content_units(everything, language))
        found = [u for u in premise_words if u in units]

    beat_tension = {name_key(b.name): b.tension for b in story.plot.beats}
    scenes = []
    for i, item in enumerate(story.scenes):
        text = scene_prose(item) + " " + " ".join(line.text for line in item.dialogue.lines)
        scenes.append(
            SceneQuality(
                index=i + 1,
                title=item.scene.title,
                prose_words=len(words(scene_prose(item))),
                dialogue_lines=len(item.dialogue.lines),
                planned_tension=beat_tension.get(name_key(item.scene.beat or "")),
                tension_words_per_100=_tension(text),
            )
        )
    planned = [(s.planned_tension, s.tension_words_per_100) for s in scenes if s.planned_tension is not None]
    correlation = _spearman([float(p) for p, _ in planned], [r for _, r in planned])

    outside = [
        f"scenes[{i}]: {line.speaker}"
        for i, item in enumerate(story.scenes)
        for line in item.dialogue.lines
        if name_key(line.speaker) not in {name_key(c) for c in item.scene.characters}
    ]
    bible = story.bible
    outside_bible, slips = [], []
    if bible is not None:
        people = {name_key(n) for n in bible.names}
        speakers = {line.speaker for item in story.scenes for line in item.dialogue.lines}
        outside_bible = sorted(s for s in speakers if name_key(s) not in people)
        for i, item in enumerate(story.scenes):
            told = [scene_prose(item)] + [line.text for line in item.dialogue.lines]
            slips += [f"scenes[{i}]: {slip}" for text in told for slip in pronoun_slips(text, bible)]
    report = QualityReport(
        scenes=scenes,
        sentences=len(keys),
        repeated_sentences=round(repeated / len(keys), 4) if keys else 0.0,
        distinct_1=round(len(set(tokens)) / len(tokens), 3) if tokens else 0.0,
        distinct_2=round(len(set(bigrams)) / len(bigrams), 3) if bigrams else 0.0,
        prose_fields=prose_fields,
        cut_off_fields=lists["cut_off"],
        unpunctuated_fields=unpunctuated,
        debris_fields=sorted(set(lists["debris"])),
        loop_fields=lists["loop"],
        non_names=lists["not_a_name"],
        non_speech_lines=lists["not_speech"],
        copied=_copies(story),
        premise_words=premise_words,
        premise_words_found=found,
        premise_coverage=round(len(found) / len(premise_words), 3) if premise_words else 1.0,
        speakers_outside_cast=outside,
        names_not_in_cast=_names_not_in_cast(story, language),
        speakers_outside_bible=outside_bible,
        pronoun_slips=slips,
        fact_contradictions=_fact_contradictions(story),
        language=language,
        gibberish_fields=lists["gibberish"],
        meta_talk_fields=lists["meta_talk"],
        copied_instruction_fields=lists["copied_instruction"],
        leading_mark_fields=lists["leading_mark"],
        null_text_fields=lists["null_text"],
        premise_names_missing=_premise_names_missing(story, everything, language),
        lead_other_pronouns=_lead_other_pronouns(story, language),
        repairs=repairs,
        kept_findings=kept_list,
        unlisted_findings=sorted({w for w in junk if w not in kept_fields}),
        prose_words_median=statistics.median(s.prose_words for s in scenes) if scenes else 0,
        tension_correlation=correlation,
        rubric_scores={s.criterion: s.score for s in story.evaluation.scores} if story.evaluation else {},
        rubric_overall=story.evaluation.overall if story.evaluation else None,
        rubric_reliable=story.evaluation.reliable if story.evaluation else False,
        rubric_notes=list(story.evaluation.notes) if story.evaluation else [],
        failed=[],
    )
    report.failed = _failed_goals(report)
    reliable, notes = rubric_verdict(story, report)
    report.rubric_reliable, report.rubric_notes = reliable, notes
    return report


def _failed_goals(report: QualityReport) -> list[str]:
    checks = {
        "debris": not report.debris_fields,
        "cut_off": report.cut_off_share <= 0.05,
        "repetition": report.repeated_sentences <= 0.02,
        "copied": not report.copied,
        "names": not (report.non_names or report.speakers_outside_cast or report.non_speech_lines),
        "bible": not (report.speakers_outside_bible or report.pronoun_slips or report.fact_contradictions),
        "prose": report.prose_words_median >= 150,
        "premise": report.premise_coverage >= 0.5,
        "text": not report.unlisted_findings,
        "lead": not report.premise_names_missing
        and (report.lead_other_pronouns is None or report.lead_other_pronouns <= 0.5),
    }
    return [name for name, ok in checks.items() if not ok]


def rubric_verdict(story: Story, report: QualityReport) -> tuple[bool, list[str]]:
    """Whether the model's rubric can be read as a verdict, and why not.

    Unreliable when every criterion got one score, or when the model scored the story
    HIGH_SCORE or more overall while it fails the code's checks (`report.failed`).
    """
    evaluation = story.evaluation
    if evaluation is None:
        return False, [f"there is no model evaluation: {story.gaps.get('evaluation', 'not made')}"]
    notes = list(evaluation.notes)
    reliable = evaluation.reliable
    scores = {s.score for s in evaluation.scores}
    if len(scores) == 1:
        reliable = False
        note = "every criterion got the same score: the model did not tell the criteria apart"
        if note not in notes:
            notes.append(note)
    if evaluation.overall >= HIGH_SCORE and report.failed:
        reliable = False
        notes.append(
            f"the model scored {evaluation.overall}/10 a story that fails the code's checks: "
            + ", ".join(GOALS[g] for g in report.failed)
        )
    return reliable, notes


# How two reports compare (revision.keep_better): which measures are better higher; the rest are
# better lower. The rubric is the model's opinion of the story, not a measure of it.
HIGHER_IS_BETTER = frozenset(
    {
        "distinct-1",
        "distinct-2",
        "premise coverage %",
        "prose words per scene (median)",
        "tension: plan vs realised (Spearman)",
    }
)
MODEL_MEASURES = frozenset({"rubric overall", "rubric reliable"})
# What the steps' metadata says of how the text was made, not a measure of the text: a revision's
# story carries other steps than its base (the junk in the text is counted by the other measures).
NEUTRAL_MEASURES = frozenset({"repaired by code", "kept with a warning", "junk not repaired or listed"})


def story_measures(story: Story) -> dict[str, float | int | None]:
    """The code's measures of the story itself: without the model's evaluation and enhancement
    (their text is not the story) and without the rubric."""
    told = story.model_copy(update={"evaluation": None, "enhancement": None})
    measures = quality_report(told).measures()
    return {name: value for name, value in measures.items() if name not in MODEL_MEASURES | NEUTRAL_MEASURES}


def _compare(before: dict[str, Any], after: dict[str, Any], *, worse: bool) -> list[str]:
    found = []
    for name, old in before.items():
        new = after.get(name)
        if old is None or new is None:
            if worse and old is not None:  # a measure the story had and lost
                found.append(f"{name}: {old:g} -> none")
            continue
        higher = name in HIGHER_IS_BETTER
        lowered = new < old if higher else new > old
        raised = new > old if higher else new < old
        if lowered if worse else raised:
            found.append(f"{name}: {old:g} -> {new:g}")
    return found


def worse_measures(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The measures (of `story_measures`) that are worse in `after`, with both values."""
    return _compare(before, after, worse=True)


def better_measures(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The measures that are better in `after`, with both values."""
    return _compare(before, after, worse=False)


def mark_evaluation(story: Story) -> Story:
    """`story` with its evaluation marked unreliable (and why) when the code's report says so."""
    if story.evaluation is None:
        return story
    report = quality_report(story)
    notes = list(dict.fromkeys(report.rubric_notes))  # marking a marked evaluation adds nothing
    evaluation = story.evaluation.model_copy(update={"reliable": report.rubric_reliable, "notes": notes})
    return story.model_copy(update={"evaluation": evaluation})


__all__ = [
    "GOALS",
    "STOPWORDS",
    "NotAStory",
    "QualityReport",
    "SceneQuality",
    "better_measures",
    "cast_problems",
    "clean_prose",
    "content_words",
    "draft_problems",
    "draft_score",
    "load_story",
    "mark_evaluation",
    "names_in",
    "quality_report",
    "rubric_verdict",
    "scene_prose",
    "sentences",
    "stem",
    "story_measures",
    "worse_measures",
]
