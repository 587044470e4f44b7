"""The quality of a story, measured by code; and the draft checks and prose cleaning the pipeline uses.

Every name is importable from `storyengine.quality`; the code lives in:

- reading.py: story.json loaded as a `Story` (`load_story`), the prose a reader gets of a scene,
  the story's language, every field a model wrote, the findings its steps recorded;
- measures.py: the measures that take more than a line (tension, names outside the cast, the
  premise's people and pronouns, bible facts contradicted, copied rationales and suggestions);
- report.py: `quality_report(story)`, the `QualityReport` (its module docstring lists every
  measure), and `mark_evaluation`, the story's evaluation marked unreliable when the report says so;
- chapters.py: a long story's measures chapter by chapter (`ChapterQuality`, in the report) and
  the people it leaves hanging (`open_threads`);
- goals.py: the GOALS a story must pass, and the score the rubric must not give a failing story;
- compare.py: two stories compared by the code's measures (`story_measures`, `worse_measures`,
  `better_measures`), what a revision keeps.

The pipeline's draft helpers live in drafts.py and are re-exported here: `clean_prose(text)`
turns a stage-1 draft into the prose a reader gets, `draft_problems(...)` says why a draft
should be drawn again, `cast_problems(...)` what names a scene's cast lacks.
"""

from __future__ import annotations

from ..drafts import STOPWORDS, cast_problems, clean_prose, draft_problems, draft_score, names_in
from ..text.segment import content_words, sentences, stem
from .chapters import ChapterQuality, open_threads
from .compare import (
    HIGHER_IS_BETTER,
    MODEL_MEASURES,
    NEUTRAL_MEASURES,
    better_measures,
    story_measures,
    worse_measures,
)
from .goals import GOALS, HIGH_SCORE
from .measures import FACT_PROBLEM, TENSION_WORDS
from .reading import NotAStory, load_story, scene_prose, step_findings, story_language
from .report import (
    JUNK_RULES,
    PROSE_FIELDS,
    QualityReport,
    SceneQuality,
    mark_evaluation,
    quality_report,
    rubric_verdict,
)

__all__ = [
    "FACT_PROBLEM",
    "GOALS",
    "HIGHER_IS_BETTER",
    "HIGH_SCORE",
    "JUNK_RULES",
    "MODEL_MEASURES",
    "NEUTRAL_MEASURES",
    "PROSE_FIELDS",
    "STOPWORDS",
    "TENSION_WORDS",
    "ChapterQuality",
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
    "open_threads",
    "quality_report",
    "rubric_verdict",
    "scene_prose",
    "sentences",
    "stem",
    "step_findings",
    "story_language",
    "story_measures",
    "worse_measures",
]
