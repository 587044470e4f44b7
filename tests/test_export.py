"""story.md reads as a story; story.fountain is Fountain that a parser reads as we mean it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from storyengine.export import to_fountain, to_markdown
from storyengine.schemas import Story
from test_quality import PROSE, story_data


def story(**changes: Any) -> Story:
    return Story.model_validate(story_data(**changes))


# -- Markdown --


def test_markdown_is_the_title_then_each_scene_as_prose_with_its_dialogue_then_the_appendix() -> None:
    text = to_markdown(story())
    assert text.startswith("# The Bottle\n")
    order = [
        text.index("## Scene 1: Arrival"),
        text.index(PROSE[0][:60]),
        text.index("**Ana**: Bo, look at this bottle (0)."),
        text.index("## Scene 2: The Storm"),
        text.index(PROSE[1][:60]),
        text.index("# Appendix"),
        text.index("## Plot (three-act)"),
        text.index("## Evaluation"),
        text.index("### Quality measured by code"),
        text.index("## Enhancement"),
    ]
    assert order == sorted(order)
    story_part = text[: text.index("# Appendix")]
    assert "| Beat |" not in story_part and "Tension" not in story_part  # the plan is not in the story
    assert "premise coverage %" in text[text.index("### Quality measured by code") :]


def test_a_scene_without_prose_falls_back_to_its_summary() -> None:
    data = story_data()
    data["scenes"][0]["prose"] = ""
    text = to_markdown(Story.model_validate(data))
    scene_one = text[text.index("## Scene 1") : text.index("## Scene 2")]
    assert "Ana finds the bottle and the message." in scene_one


def test_markdown_escapes_what_would_be_markup() -> None:
    data = story_data()
    data["scenes"][0]["prose"] = "# Not a heading\n\n- not a list\n\nShe said *this* | that."
    text = to_markdown(Story.model_validate(data))
    assert "\\# Not a heading" in text and "\\- not a list" in text
    assert "She said \\*this\\* \\| that." in text


def test_an_unreliable_rubric_is_said_in_the_appendix() -> None:
    data = story_data()
    for score in data["evaluation"]["scores"]:
        score["score"] = 1
    data["evaluation"]["overall"] = 1
    text = to_markdown(Story.model_validate(data))
    assert "scores below are not reliable" in text and "same score" in text


# -- Fountain --


def classify(text: str) -> list[tuple[str, str]]:
    """A small reader of Fountain 1.1's block rules: (element, text) for every non-blank line.

    Title page keys up to the first blank line; then a line after a blank one is a scene heading
    (INT/EXT/... or a single leading "."), forced action ("!"), a forced cue ("@") or a cue (all
    capitals, the next line not blank), a transition (ends in "TO:" in capitals, or ">"), a
    section ("#"), synopsis ("="), lyric ("~"), centered (">...<"), note ("[["); lines after a
    cue are parentheticals ("(...)") or dialogue until a blank line; anything else is action.
    """
    lines = text.split("\n")
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(lines) and lines[i].strip():
        out.append(("title", lines[i]))
        i += 1
    in_dialogue = False
    for index in range(i, len(lines)):
        line = lines[index]
        if not line.strip():
            in_dialogue = False
            continue
        before_blank = index == 0 or not lines[index - 1].strip()
        after = lines[index + 1] if index + 1 < len(lines) else ""
        if in_dialogue:
            out.append(("parenthetical" if re.fullmatch(r"\(.*\)", line) else "dialogue", line))
            continue
        if line.startswith("!"):
            out.append(("action", line[1:]))
        elif before_blank and re.match(r"^\.[^.]", line):
            out.append(("heading", line[1:]))
        elif before_blank and re.match(r"^(?:INT|EXT|EST|INT\./EXT|INT/EXT|I/E)[. ]", line, re.I):
            out.append(("heading", line))
        elif line.startswith("@") or (
            before_blank and after.strip() and line.upper() == line and re.search(r"[A-Z]", line)
        ):
            out.append(("cue", line.lstrip("@")))
            in_dialogue = True
        elif re.match(r"^[#=~]|^\[\[|^>", line) or (line.isupper() and line.endswith("TO:")):
            out.append(("other", line))
        else:
            out.append(("action", line))
    return out


def test_fountain_has_a_title_page_headings_action_cues_parentheticals_and_dialogue() -> None:
    data = story_data()
    data["scenes"][1]["dialogue"]["lines"][0]["direction"] = "shouting over the wind"
    elements = classify(to_fountain(Story.model_validate(data)))
    kinds = [kind for kind, _ in elements]
    assert kinds[:3] == ["title"] * 3 and elements[0][1] == "Title: The Bottle"
    assert kinds.count("heading") == 3 and kinds.count("cue") == 6 and "other" not in kinds
    assert [text for kind, text in elements if kind == "cue"][:2] == ["ANA", "BO"]
    assert ("parenthetical", "(shouting over the wind)") in elements
    assert ("dialogue", "Bo, look at this bottle (0).") in elements
    actions = [text for kind, text in elements if kind == "action"]
    assert actions[0].startswith(PROSE[0][:40])  # the prose is the action
    heading = next(i for i, (kind, _) in enumerate(elements) if kind == "heading")
    assert elements[heading + 1] == ("action", PROSE[0])


HOSTILE = {
    "all capitals": "THE LAMP GOES OUT",
    "forced action mark": "!Bang goes the door.",
    "forced cue mark": "@the keeper waits.",
    "section": "# Part two",
    "synopsis": "= what happens next",
    "lyric": "~ a sea shanty drifts up",
    "transition": "> later that night",
    "a heading by its words": "INT. the kitchen is warm.",
    "a forced heading": ".and then silence.",
    "a note": "[[the keeper forgets]] the lamp.",
    "a transition by its words": "CUT TO:",
}


@pytest.mark.parametrize("prose", HOSTILE.values(), ids=HOSTILE.keys())
def test_prose_that_looks_like_another_element_stays_action(prose: str) -> None:
    data = story_data()
    data["scenes"][0]["prose"] = f"{prose}\n\nShe waits."
    elements = classify(to_fountain(Story.model_validate(data)))
    first = next(i for i, (kind, _) in enumerate(elements) if kind == "heading")
    kind, text = elements[first + 1]
    assert kind == "action", (kind, text)
    assert "[[" not in text  # a note would vanish from the page
    if "[[" not in prose:
        assert text == prose  # shown as written, not stripped of its first character
    assert elements[first + 2] == ("action", "She waits.")


def test_emphasis_characters_in_text_are_escaped() -> None:
    data = story_data()
    data["scenes"][0]["prose"] = "She reads *every* word_by_word."
    data["scenes"][0]["dialogue"]["lines"][0]["text"] = "I *told* you."
    fountain = to_fountain(Story.model_validate(data))
    assert "She reads \\*every\\* word\\_by\\_word." in fountain and "I \\*told\\* you." in fountain


def test_names_with_accents_and_apostrophes_are_forced_cues() -> None:
    data = story_data()
    data["plot"]["characters"] = ["José", "O'Neil"]
    for item in data["scenes"]:
        item["scene"]["characters"] = ["José", "O'Neil"]
        for line, speaker in zip(item["dialogue"]["lines"], ["José", "O'Neil"], strict=True):
            line["speaker"] = speaker
    elements = classify(to_fountain(Story.model_validate(data)))
    assert [text for kind, text in elements if kind == "cue"][:2] == ["JOSÉ", "O'NEIL"]


def test_a_setting_that_starts_with_dots_still_makes_a_heading() -> None:
    data = story_data()
    data["scenes"][0]["scene"]["setting"] = "...somewhere dark."
    elements = classify(to_fountain(Story.model_validate(data)))
    assert ("heading", "SOMEWHERE DARK.") in elements
