"""The quality report of a story. `quality_report(story)` computes, from the typed `Story` alone
(no model call):

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
"""

from __future__ import annotations

import itertools
import statistics

from pydantic import BaseModel, Field

from ..bible import pronoun_slips
from ..schemas import Story, name_key
from ..text.language import is_english
from ..text.review import REPAIRS
from ..text.rules import Context, findings_in
from ..text.segment import content_units, content_words, ends_a_sentence, sentences, stem, word_key, words
from .chapters import ChapterQuality, chapter_qualities, chapter_tension_correlation, open_threads
from .goals import GOALS, HIGH_SCORE
from .measures import (
    copied_pairs,
    fact_contradictions,
    lead_other_pronouns,
    names_not_in_cast,
    premise_names_missing,
    spearman,
    tension_per_100,
)
from .reading import scene_prose, step_findings, story_fields, story_language

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
    chapters: list[ChapterQuality] = Field(
        default_factory=list, description="a long story's, chapter by chapter"
    )
    chapter_tension_correlation: float | None = None
    open_threads: list[str] = Field(default_factory=list, description="people the story leaves hanging")
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
            "chapter tension: plan vs realised (Spearman)": self.chapter_tension_correlation,
            "open threads": len(self.open_threads),
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
            "open threads": self.open_threads,
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
    for where, key, text in story_fields(story):
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
    told = [text for where, _, text in story_fields(story) if where.startswith(("plot.", "scenes["))]
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
    # A long story's scene realises a beat of its chapter (names may repeat across chapters).
    planned_by_place = [b.tension for chapter in story.chapters for b in chapter.beats]
    scenes = []
    for i, item in enumerate(story.scenes):
        text = scene_prose(item) + " " + " ".join(line.text for line in item.dialogue.lines)
        scenes.append(
            SceneQuality(
                index=i + 1,
                title=item.scene.title,
                prose_words=len(words(scene_prose(item))),
                dialogue_lines=len(item.dialogue.lines),
                planned_tension=planned_by_place[i]
                if story.chapters
                else beat_tension.get(name_key(item.scene.beat or "")),
                tension_words_per_100=tension_per_100(text),
            )
        )
    planned = [(s.planned_tension, s.tension_words_per_100) for s in scenes if s.planned_tension is not None]
    correlation = spearman([float(p) for p, _ in planned], [r for _, r in planned])

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
        copied=copied_pairs(story),
        premise_words=premise_words,
        premise_words_found=found,
        premise_coverage=round(len(found) / len(premise_words), 3) if premise_words else 1.0,
        speakers_outside_cast=outside,
        names_not_in_cast=names_not_in_cast(story, language),
        speakers_outside_bible=outside_bible,
        pronoun_slips=slips,
        fact_contradictions=fact_contradictions(story),
        language=language,
        gibberish_fields=lists["gibberish"],
        meta_talk_fields=lists["meta_talk"],
        copied_instruction_fields=lists["copied_instruction"],
        leading_mark_fields=lists["leading_mark"],
        null_text_fields=lists["null_text"],
        premise_names_missing=premise_names_missing(story, everything, language),
        lead_other_pronouns=lead_other_pronouns(story, language),
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
    if story.chapters:
        report.chapters = chapter_qualities(story, quality_report)
        report.chapter_tension_correlation = chapter_tension_correlation(report.chapters)
    report.open_threads = open_threads(story)
    report.failed = failed_goals(report)
    reliable, notes = rubric_verdict(story, report)
    report.rubric_reliable, report.rubric_notes = reliable, notes
    return report


def mark_evaluation(story: Story) -> Story:
    """`story` with its evaluation marked unreliable (and why) when the code's report says so."""
    if story.evaluation is None:
        return story
    report = quality_report(story)
    notes = list(dict.fromkeys(report.rubric_notes))  # marking a marked evaluation adds nothing
    evaluation = story.evaluation.model_copy(update={"reliable": report.rubric_reliable, "notes": notes})
    return story.model_copy(update={"evaluation": evaluation})


def failed_goals(report: QualityReport) -> list[str]:
    """The names of the GOALS `report` misses."""
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
