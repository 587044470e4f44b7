"""`bench long`: one long story (chapters x scenes), cache off, on the configured model or `--scripted`.

It prints, per scene against its index: the words a reader gets (prose and dialogue), the prompt
and completion tokens of its scene and dialogue steps (drafts, structuring, re-asks, summaries),
and their seconds; per chapter, the code's quality measures of that chapter alone (repetition,
cut-offs, debris, names outside the bible, pronoun slips, the tension the plan asked for against
the words) and the people the story leaves hanging (quality/chapters.py). The
headline is whether the prompt tokens a scene costs stay flat: the median of the last third of the
scenes against the second sixth to the third (scenes 5-20 and 41-60 of a 60-scene novella), and
the cost per word against the story as a whole.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..quality import QualityReport, quality_report
from ..schemas import Story
from ..text.segment import words
from .harness import build_engine, metered_providers, primary_provider, scratch_settings
from .overhead import scripted_providers, whole_objects
from .table import Report

Progress = Callable[[str], None]
PREMISE = "A lighthouse keeper's daughter inherits the light, the debts and a feud with the harbour master."
PER_CHAPTER = (
    "repeated sentences %",
    "prose fields cut off %",
    "fields with debris",
    "names in prose not in the cast",
    "pronoun slips",
)


def scene_costs(story: Story) -> list[dict[str, Any]]:
    """Per scene: its chapter, words, and the tokens and seconds of its scene and dialogue steps."""
    steps: dict[str, Any] = story.meta.get("steps") or {}
    chapter_of = [c for c, (_, scenes) in enumerate(story.chapter_scenes(), 1) for _ in scenes]
    rows = []
    for i, item in enumerate(story.scenes):
        keys = [f"scene.{i}.draft", f"scene.{i}", f"dialogue.{i}.draft", f"dialogue.{i}"]
        metas = [steps.get(k) or {} for k in keys]
        said = " ".join(line.text for line in item.dialogue.lines)
        rows.append(
            {
                "scene": i + 1,
                "chapter": chapter_of[i],
                "words": len(words(item.prose)) + len(words(said)),
                "prompt": sum((m.get("tokens") or {}).get("prompt", 0) for m in metas),
                "completion": sum((m.get("tokens") or {}).get("completion", 0) for m in metas),
                "seconds": round(sum(sum((m.get("seconds") or {}).values()) for m in metas), 2),
            }
        )
    return rows


def flat_ratio(prompts: list[int]) -> tuple[float, float, float] | None:
    """(median early, median late, late/early): early = scenes from 1/12 to 1/3 of the story (5-20
    of 60), late = its last third (41-60); None for a story too short to tell."""
    n = len(prompts)
    early = prompts[n // 12 : n // 3]
    late = prompts[n - n // 3 :]
    if not early or not late:
        return None
    a, b = statistics.median(early), statistics.median(late)
    return a, b, (b / a if a else float("inf"))


def chapter_measures(quality: QualityReport) -> list[list[Any]]:
    """Each chapter's quality measures by code (the quality report's, chapter by chapter)."""
    return [
        [c.number, c.title[:30], c.planned_tension, c.realised_tension, c.repeated_sentences_pct,
         c.cut_off_pct, c.debris, c.names_not_in_cast, c.pronoun_slips]
        for c in quality.chapters
    ]  # fmt: skip


async def run_long_bench(
    report: Report,
    settings: Settings,
    *,
    chapters: int,
    per_chapter: int,
    seed: int,
    scripted: bool,
    progress: Progress,
    written: Story | None = None,
) -> Report:
    """Write the long story and measure it; with `written`, measure that story instead (a long
    `generate` measured after it ran: its wall time is not known here)."""
    if written is not None:
        return measured(report, written, "a story file", None)
    with tempfile.TemporaryDirectory(prefix="storyengine-bench-long-") as tmp:
        settings = scratch_settings(settings, Path(tmp), cache=False)
        providers = metered_providers(settings)
        if scripted:
            settings = whole_objects(settings)
            providers = scripted_providers(settings)
        async with build_engine(settings, providers) as engine:
            started = time.perf_counter()

            def shown(event: dict[str, Any]) -> None:
                if event.get("event") == "step_done" and event.get("step") == "dialogue":
                    progress(f"scene {event.get('index')} of {event.get('total')} done")

            story = await engine.generate(
                PREMISE, seed=seed, chapters=chapters, scenes_per_chapter=per_chapter, on_event=shown
            )
            wall = time.perf_counter() - started
    return measured(report, story, "scripted" if scripted else primary_provider(settings), wall)


def measured(report: Report, story: Story, provider: str, wall: float | None) -> Report:
    """The tables and headline numbers of `bench long` for `story`."""
    rows = scene_costs(story)
    for name, key, unit in (
        ("prompt tokens per scene", "prompt", "tokens"),
        ("completion tokens per scene", "completion", "tokens"),
        ("words per scene", "words", "words"),
        ("seconds per scene", "seconds", "s"),
    ):
        measure = report.measure(name, unit)
        for row in rows:
            measure.add(float(row[key]))
    total_words = sum(r["words"] for r in rows)
    spent = sum(r["prompt"] + r["completion"] for r in rows)
    steps = (story.meta.get("steps") or {}).values()
    everything = sum(sum((m.get("tokens") or {}).values()) for m in steps if isinstance(m, dict))
    flat = flat_ratio([r["prompt"] for r in rows])
    report.summary.update(
        {
            "provider": provider,
            "chapters": len(story.chapters),
            "scenes": len(story.scenes),
            "words": total_words,
            "wall_seconds": None if wall is None else round(wall, 1),
            "tokens_per_word": round(spent / total_words, 2) if total_words else None,
            # every step's tokens (plot, bible, chapters, evaluation, ... too): against a short story's
            "story_tokens_per_word": round(everything / total_words, 2) if total_words else None,
            "gaps": story.gaps,
            "prompt_flat": None
            if flat is None
            else {"early_median": flat[0], "late_median": flat[1], "late_over_early": round(flat[2], 3)},
            "per_scene": {str(r["scene"]): r for r in rows},  # shown in the "per scene" table
        }
    )
    report.tables.append(
        (
            "per scene",
            ["scene", "chapter", "words", "prompt", "completion", "seconds"],
            [[r[k] for k in ("scene", "chapter", "words", "prompt", "completion", "seconds")] for r in rows],
        )
    )
    columns = ["chapter", "title", "tension planned", "tension words /100", *PER_CHAPTER]
    quality = quality_report(story)
    report.tables.append(("per chapter", columns, chapter_measures(quality)))
    report.summary["open_threads"] = quality.open_threads
    report.summary["chapter_tension_correlation"] = quality.chapter_tension_correlation
    if flat is not None:
        report.notes.append(
            f"prompt tokens per scene: median {flat[0]:.0f} early, {flat[1]:.0f} late "
            f"({100 * (flat[2] - 1):+.1f} %); {report.summary['tokens_per_word']} tokens per word"
        )
    return report
