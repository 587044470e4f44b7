"""The goals a story must pass (the issue's, checked by code), and HIGH_SCORE: a rubric that gives
that much to a story missing a goal is no verdict (report.py's `rubric_verdict`).
"""

from __future__ import annotations

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
