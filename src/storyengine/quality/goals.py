"""The goals a story must pass (the issue's, checked by code) and what they say of the model's rubric:
unreliable when every criterion got one score, or when the model scored HIGH_SCORE or more a story
that misses a goal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..schemas import Story

if TYPE_CHECKING:
    from .report import QualityReport

# The goals, as the checks a story must pass (name -> description).
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
