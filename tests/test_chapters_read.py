"""Reading a story with chapters: story.md, story.fountain and story.epub group its scenes by chapter,
and a story without chapters is written exactly as before chapters existed."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
import zipfile
from typing import Any

from markdown_it import MarkdownIt

from storyengine.epub import to_epub
from storyengine.export import (
    to_fountain,
    to_markdown,
)
from storyengine.schemas import Story
from test_export import classify
from test_quality import PROSE, story_data

XHTML = "{http://www.w3.org/1999/xhtml}"
NCX = "{http://www.daisy.org/z3986/2005/ncx/}"
EPUB_TYPE = "{http://www.idpf.org/2007/ops}type"

# The three beats of test_quality's story, each a chapter of two scenes: (title, setting, Ana's line).
SCENES = [
    [
        ("The Stairs", "The lighthouse stairs, evening.", "The ferry is late again."),
        ("The Log", "The keeper's room, night.", "That is your handwriting."),
    ],
    [
        ("Midnight", "The lamp room, midnight.", "The glass will hold, Bo."),
        ("The Ferry Lights", "The gallery outside the lamp, midnight.", "I see the ferry!"),
    ],
    [
        ("Tea by the Window", "The keeper's room, dawn.", "Drink it while it is hot."),
        ("The Bottle Goes Back", "The rocks below the lighthouse, morning.", "Goodbye, keeper."),
    ],
]


def _halves(prose: str) -> tuple[str, str]:
    """A scene's prose as two scenes' prose: its first sentences, and the rest."""
    sentences = re.split(r"(?<=[.!?]) ", prose)
    middle = (len(sentences) + 1) // 2
    return " ".join(sentences[:middle]), " ".join(sentences[middle:])


def chaptered_data(**changes: Any) -> dict[str, Any]:
    """test_quality's story split into three chapters of two scenes: each beat of its plot is a
    chapter (its title, goal and tension); each of its scenes is two scenes, with half its prose."""
    data = story_data(**changes)
    chapters, scenes = [], []
    for beat, old, new_scenes in zip(data["plot"]["beats"], data["scenes"], SCENES, strict=True):
        beats = []
        for (title, setting, line), prose in zip(new_scenes, _halves(old["prose"]), strict=True):
            first_sentence = re.split(r"(?<=[.!?]) ", prose)[0]
            beats.append({"name": title, "purpose": first_sentence, "tension": beat["tension"]})
            scene = {"title": title, "setting": setting, "summary": first_sentence, "beat": title}
            lines = [
                {"speaker": "Ana", "text": line},
                {"speaker": "Bo", "text": f"Scene {len(scenes) + 1}, and still no ferry."},
            ]
            scenes.append(
                {
                    "scene": {**scene, "characters": ["Ana", "Bo"]},
                    "dialogue": {"lines": lines},
                    "prose": prose,
                }
            )
        chapters.append(
            {
                "title": beat["name"],
                "goal": beat["purpose"],
                "tension": beat["tension"],
                "characters": ["Ana", "Bo"],
                "beats": beats,
            }
        )
    data["chapters"], data["scenes"] = chapters, scenes
    return data


def chaptered(**changes: Any) -> Story:
    return Story.model_validate(chaptered_data(**changes))


def long_story_data(chapters: int = 12, per_chapter: int = 5) -> dict[str, Any]:
    """A long story as the pipeline writes one: `chapters` chapters of `per_chapter` scenes (60)."""
    data = story_data()
    tensions = [2, 3, 4, 5, 6, 7, 8, 9, 10, 7, 4, 2] * 2
    beats = [
        {"name": f"Night {n}", "purpose": f"The keeper's night {n} changes the message.", "tension": t}
        for n, t in zip(range(1, chapters + 1), tensions, strict=False)
    ]
    data["plot"]["beats"] = beats
    data["chapters"], data["scenes"] = [], []
    for n, beat in enumerate(beats, 1):
        scene_beats = []
        for k in range(1, per_chapter + 1):
            title = f"Night {n}, hour {k}"
            scene_beats.append(
                {"name": title, "purpose": f"Hour {k} of night {n}.", "tension": beat["tension"]}
            )
            scene = {"title": title, "setting": f"The lighthouse, hour {k}.", "summary": f"Hour {k} passes."}
            lines = [
                {"speaker": "Ana", "text": f"Hour {k} of night {n}."},
                {"speaker": "Bo", "text": "Still dark."},
            ]
            data["scenes"].append(
                {
                    "scene": {**scene, "characters": ["Ana", "Bo"], "beat": title},
                    "dialogue": {"lines": lines},
                    "prose": PROSE[(n + k) % len(PROSE)],
                }
            )
        data["chapters"].append(
            {"title": beat["name"], "goal": beat["purpose"], "tension": beat["tension"], "beats": scene_beats}
        )
    return data


def test_the_chaptered_story_is_valid_and_its_chapters_hold_its_scenes() -> None:
    story = chaptered()
    groups = story.chapter_scenes()
    assert [chapter.title for chapter, _ in groups if chapter] == ["Arrival", "The Storm", "Dawn"]
    assert [[item.scene.title for item in items] for _, items in groups] == [
        [title for title, *_ in chapter] for chapter in SCENES
    ]
    assert [item.prose for item in story.scenes] == [half for prose in PROSE for half in _halves(prose)]
    assert all(item.prose for item in story.scenes)


# -- Markdown --


# What the code before chapters wrote for test_quality's story, up to its appendix.
STORY_PART_BEFORE_CHAPTERS = (
    "# The Bottle\n"
    "\n"
    "*A lighthouse keeper finds a message in a bottle written by her future self.*\n"
    "\n"
    "## Scene 1: Arrival\n"
    "\n"
    "*The lighthouse, night.*\n"
    "\n"
    f"{PROSE[0]}\n"
    "\n"
    "**Ana**: Bo, look at this bottle (0).\n"
    "\n"
    "**Bo**: That is your handwriting, number 0.\n"
    "\n"
    "## Scene 2: The Storm\n"
    "\n"
    "*The lighthouse, night.*\n"
    "\n"
    f"{PROSE[1]}\n"
    "\n"
    "**Ana**: Bo, look at this bottle (1).\n"
    "\n"
    "**Bo**: That is your handwriting, number 1.\n"
    "\n"
    "## Scene 3: Dawn\n"
    "\n"
    "*The lighthouse, night.*\n"
    "\n"
    f"{PROSE[2]}\n"
    "\n"
    "**Ana**: Bo, look at this bottle (2).\n"
    "\n"
    "**Bo**: That is your handwriting, number 2.\n"
    "\n"
)


def unchaptered_variants() -> list[Story]:
    hostile = story_data(gaps={"enhancement": "the model gave none"}, enhancement=None)
    hostile["plot"]["title"] = "A *bold* [link](x) <b>|"
    hostile["scenes"][0]["prose"] = "# Not a heading\n\n- not a list\n\n1. nor this"
    hostile["scenes"][1]["dialogue"]["lines"][0]["direction"] = "shouting_over *the* wind"
    no_prose = story_data()
    no_prose["scenes"][2]["prose"] = ""
    return [Story.model_validate(data) for data in (story_data(), hostile, no_prose)]


def test_markdown_without_chapters_is_byte_for_byte_what_it_was() -> None:
    assert to_markdown(Story.model_validate(story_data())).split("---\n\n# Appendix")[0] == (
        STORY_PART_BEFORE_CHAPTERS
    )
    for story in unchaptered_variants():  # scenes at the second level, no contents, no chapter
        lines = to_markdown(story).split("\n")
        scenes = [line for line in lines if line.startswith("## Scene ")]
        assert len(scenes) == len(story.scenes) and not any("Chapter" in line for line in lines)


def test_markdown_has_contents_then_chapters_with_their_goal_and_their_scenes_a_level_down() -> None:
    text = to_markdown(chaptered())
    story_part = text[: text.index("\n---\n\n# Appendix")]
    assert story_part.startswith("# The Bottle\n\n*A lighthouse keeper")
    contents = [
        "- [Chapter 1: Arrival](#chapter-1-arrival)",
        "- [Chapter 2: The Storm](#chapter-2-the-storm)",
        "- [Chapter 3: Dawn](#chapter-3-dawn)",
    ]
    lines = story_part.split("\n")
    assert lines[4:8] == [*contents, ""]  # right after the title and the premise
    headings = [line for line in lines if line.startswith("#")]
    assert headings == [
        "# The Bottle",
        "## Chapter 1: Arrival",
        "### Scene 1: The Stairs",
        "### Scene 2: The Log",
        "## Chapter 2: The Storm",
        "### Scene 3: Midnight",
        "### Scene 4: The Ferry Lights",
        "## Chapter 3: Dawn",
        "### Scene 5: Tea by the Window",
        "### Scene 6: The Bottle Goes Back",
    ]
    chapter_two = story_part[story_part.index("## Chapter 2") : story_part.index("## Chapter 3")]
    assert chapter_two.startswith("## Chapter 2: The Storm\n\n*The storm tests the message.*\n\n### Scene 3")
    story = chaptered()
    for item in story.scenes[2:4]:  # the chapter's scenes: prose and dialogue, as a scene always was
        assert item.prose[:50] in chapter_two and f"**Ana**: {item.dialogue.lines[0].text}" in chapter_two
    assert story.scenes[4].prose[:50] not in chapter_two
    assert "# Appendix" in text and "## Plot (three-act)" in text  # the appendix is still there


def test_a_markdown_reader_sees_the_hierarchy_and_the_contents_links() -> None:
    """markdown-it (CommonMark) reads the headings as title > chapter > scene, and the contents as a
    list of links, each to a chapter heading's id as GitHub makes it."""
    tokens = MarkdownIt().parse(to_markdown(chaptered()).split("\n---\n")[0])
    levels = [(t.tag, tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert [tag for tag, _ in levels] == ["h1", "h2", "h3", "h3", "h2", "h3", "h3", "h2", "h3", "h3"]
    links = [
        (child.attrs["href"], tokens[i].children[j + 1].content)  # type: ignore[index]
        for i, token in enumerate(tokens)
        if token.type == "inline" and token.children
        for j, child in enumerate(token.children)
        if child.type == "link_open"
    ]
    assert links == [
        ("#chapter-1-arrival", "Chapter 1: Arrival"),
        ("#chapter-2-the-storm", "Chapter 2: The Storm"),
        ("#chapter-3-dawn", "Chapter 3: Dawn"),
    ]
    assert [content for tag, content in levels if tag == "h2"] == [text for _, text in links]


def test_chapter_titles_are_escaped_and_linked_by_the_id_github_gives_them() -> None:
    data = chaptered_data()
    data["chapters"][1]["title"] = "Ana's *Storm* [at] 3 a.m. — & after_all"
    data["chapters"][1]["goal"] = "The storm <b>tests</b> the message."
    data["chapters"][2]["title"] = "Рассвет über alles"
    text = to_markdown(Story.model_validate(data))
    heading = r"Chapter 2: Ana's \*Storm\* \[at\] 3 a.m. — & after\_all"
    # GitHub: lower case; drops what is not a letter, mark, digit, connector, space or hyphen; spaces as "-"
    assert f"- [{heading}](#chapter-2-anas-storm-at-3-am---after_all)" in text
    assert f"\n## {heading}\n\n*The storm \\<b\\>tests\\</b\\> the message.*\n" in text
    assert "- [Chapter 3: Рассвет über alles](#chapter-3-рассвет-über-alles)" in text


# -- Fountain --


# What the code before chapters wrote for test_quality's story.
FOUNTAIN_BEFORE_CHAPTERS = (
    "Title: The Bottle\n"
    "Credit: Written with storyengine\n"
    "Notes: A lighthouse keeper finds a message in a bottle written by her future self.\n"
    "\n"
    "\n"
    ".THE LIGHTHOUSE, NIGHT.\n"
    "\n"
    f"{PROSE[0]}\n"
    "\n"
    "@ANA\n"
    "Bo, look at this bottle (0).\n"
    "\n"
    "@BO\n"
    "That is your handwriting, number 0.\n"
    "\n"
    "\n"
    ".THE LIGHTHOUSE, NIGHT.\n"
    "\n"
    f"{PROSE[1]}\n"
    "\n"
    "@ANA\n"
    "Bo, look at this bottle (1).\n"
    "\n"
    "@BO\n"
    "That is your handwriting, number 1.\n"
    "\n"
    "\n"
    ".THE LIGHTHOUSE, NIGHT.\n"
    "\n"
    f"{PROSE[2]}\n"
    "\n"
    "@ANA\n"
    "Bo, look at this bottle (2).\n"
    "\n"
    "@BO\n"
    "That is your handwriting, number 2.\n"
)


def test_fountain_without_chapters_is_what_it_was() -> None:
    for story in unchaptered_variants():
        elements = classify(to_fountain(story))
        assert not [text for kind, text in elements if kind == "other"]  # no section, no synopsis
    assert to_fountain(Story.model_validate(story_data())) == FOUNTAIN_BEFORE_CHAPTERS


def test_fountain_chapters_are_sections_with_their_goal_before_their_scenes() -> None:
    story = chaptered()
    elements = classify(to_fountain(story))
    outline = [(kind, text) for kind, text in elements if kind in ("heading", "other")]
    settings = [item.scene.setting.upper() for item in story.scenes]
    assert outline == [
        ("other", "# Chapter 1: Arrival"),
        ("other", "= Ana finds the bottle and the message."),
        ("heading", settings[0]),
        ("heading", settings[1]),
        ("other", "# Chapter 2: The Storm"),
        ("other", "= The storm tests the message."),
        ("heading", settings[2]),
        ("heading", settings[3]),
        ("other", "# Chapter 3: Dawn"),
        ("other", "= Ana sends the bottle back."),
        ("heading", settings[4]),
        ("heading", settings[5]),
    ]
    assert [text for kind, text in elements if kind == "cue"] == ["ANA", "BO"] * 6
    assert ("dialogue", "I see the ferry!") in elements


def test_screenplain_reads_the_chapters_as_sections() -> None:
    from screenplain.parsers import fountain
    from screenplain.types import Action, Dialog, Section, Slug

    def parse(story: Story) -> list[Any]:
        return list(fountain.parse(io.StringIO(to_fountain(story))))

    story = chaptered()
    data = chaptered_data()
    data["chapters"][0]["title"] = "The *first* night"
    paragraphs = parse(Story.model_validate(data))
    kinds = [type(p).__name__ for p in paragraphs]
    assert kinds == ["Section", *(["Slug", "Action", "Dialog", "Dialog"] * 2)] * 3
    sections = [p for p in paragraphs if isinstance(p, Section)]
    assert [(s.level, s.synopsis) for s in sections] == [(1, c.goal) for c in story.chapters]
    assert [s.text.to_html() for s in sections] == [
        "Chapter 1: The *first* night",  # escapes read back as the characters, not as emphasis
        "Chapter 2: The Storm",
        "Chapter 3: Dawn",
    ]
    slugs = [p for p in paragraphs if isinstance(p, Slug)]
    assert [str(s.line) for s in slugs] == [item.scene.setting.upper() for item in story.scenes]
    actions = [p for p in paragraphs if isinstance(p, Action)]
    assert [str(a.lines[0]) for a in actions] == [item.prose for item in story.scenes]
    cues = [str(p.character) for p in paragraphs if isinstance(p, Dialog)]
    assert cues == ["ANA", "BO"] * 6
    plain = parse(Story.model_validate(story_data()))
    assert (
        not [p for p in plain if isinstance(p, Section)]
        and len([p for p in plain if isinstance(p, Slug)]) == 3
    )


# -- EPUB --


def epub_files(story: Story) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(to_epub(story))) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def spine_documents(files: dict[str, bytes]) -> list[tuple[str, ET.Element]]:
    """The spine's documents, in order: (file name, parsed XHTML)."""
    opf = ET.fromstring(files["EPUB/content.opf"])
    hrefs = {item.get("id"): item.get("href") for item in opf.iter("{http://www.idpf.org/2007/opf}item")}
    names = [str(hrefs[ref.get("idref")]) for ref in opf.iter("{http://www.idpf.org/2007/opf}itemref")]
    return [(name, ET.fromstring(files[f"EPUB/{name}"])) for name in names]


def text(element: ET.Element | None) -> str:
    assert element is not None
    return " ".join("".join(element.itertext()).split())


def test_the_epub_has_one_document_per_chapter_holding_its_scenes() -> None:
    story = chaptered(gaps={"evaluation": "the model gave no valid evaluation"}, evaluation=None)
    docs = spine_documents(epub_files(story))
    assert [name for name, _ in docs] == [
        "title.xhtml",
        "chapter-01.xhtml",
        "chapter-02.xhtml",
        "chapter-03.xhtml",
        "missing.xhtml",
    ]
    number = 0
    for n, ((_, doc), (chapter, items)) in enumerate(zip(docs[1:4], story.chapter_scenes(), strict=True), 1):
        assert chapter is not None
        body = doc.find(f"{XHTML}body")
        assert body is not None
        assert text(body.find(f"{XHTML}h1")) == f"Chapter {n}: {chapter.title}"
        assert text(body.find(f"{XHTML}p[@class='goal']")) == chapter.goal
        sections = body.findall(f"{XHTML}section[@class='scene']")
        assert len(sections) == len(items) == 2
        for section, item in zip(sections, items, strict=True):
            number += 1
            assert section.get("id") == f"scene-{number}"
            assert text(section.find(f"{XHTML}h2")) == item.scene.title
            paragraphs = [text(p) for p in section.findall(f"{XHTML}p")]
            assert paragraphs == [item.scene.setting, item.prose]
            lines = section.findall(f"{XHTML}section[@class='dialogue']/{XHTML}p")
            assert [text(p) for p in lines] == [f"{ln.speaker}: {ln.text}" for ln in item.dialogue.lines]
    assert number == 6
    assert "the model gave no valid evaluation" in text(docs[4][1])
    assert b".goal" in epub_files(story)["EPUB/style.css"]
    assert b".goal" not in epub_files(Story.model_validate(story_data()))["EPUB/style.css"]


def _ids(files: dict[str, bytes], href: str) -> tuple[str, set[str]]:
    name, _, fragment = href.partition("#")
    doc = ET.fromstring(files[f"EPUB/{name}"])
    return fragment, {str(e.get("id")) for e in doc.iter() if e.get("id")}


def test_the_epub_contents_are_chapters_then_their_scenes_in_nav_and_ncx() -> None:
    data = chaptered_data(
        bible={
            "characters": [
                {
                    "name": "Ana",
                    "role": "the keeper",
                    "description": "She keeps the light.",
                    "pronouns": "she/her",
                },
                {
                    "name": "Bo",
                    "role": "her friend",
                    "description": "He rows the ferry.",
                    "pronouns": "he/him",
                },
            ],
            "setting": "A lighthouse on a rocky island.",
            "facts": [],
        }
    )
    files = epub_files(Story.model_validate(data))
    expected = [
        ("The Bottle", "title.xhtml", []),
        ("Chapter 1: Arrival", "chapter-01.xhtml", [("The Stairs", 1), ("The Log", 2)]),
        ("Chapter 2: The Storm", "chapter-02.xhtml", [("Midnight", 3), ("The Ferry Lights", 4)]),
        ("Chapter 3: Dawn", "chapter-03.xhtml", [("Tea by the Window", 5), ("The Bottle Goes Back", 6)]),
        ("Story bible", "bible.xhtml", []),
    ]

    def tree(title: str, href: str, scenes: list[tuple[str, int]]) -> tuple[str, str, list[tuple[str, str]]]:
        return title, href, [(scene, f"{href}#scene-{n}") for scene, n in scenes]

    nav = ET.fromstring(files["EPUB/nav.xhtml"])
    toc = next(n for n in nav.iter(f"{XHTML}nav") if n.get(EPUB_TYPE) == "toc")
    top = toc.find(f"{XHTML}ol")
    assert top is not None
    in_nav = []
    for li in top.findall(f"{XHTML}li"):
        link = li.find(f"{XHTML}a")
        assert link is not None
        inner = [(text(a), str(a.get("href"))) for a in li.findall(f"{XHTML}ol/{XHTML}li/{XHTML}a")]
        in_nav.append((text(link), str(link.get("href")), inner))
    assert in_nav == [tree(*entry) for entry in expected]

    ncx = ET.fromstring(files["EPUB/toc.ncx"])
    nav_map = ncx.find(f"{NCX}navMap")
    assert nav_map is not None

    def point(element: ET.Element) -> tuple[str, str]:
        content = element.find(f"{NCX}content")
        assert content is not None
        return text(element.find(f"{NCX}navLabel")), str(content.get("src"))

    in_ncx = [
        (*point(p), [point(inner) for inner in p.findall(f"{NCX}navPoint")])
        for p in nav_map.findall(f"{NCX}navPoint")
    ]
    assert in_ncx == [tree(*entry) for entry in expected]
    ids = [p.get("id") for p in nav_map.iter(f"{NCX}navPoint")]
    assert len(ids) == len(set(ids)) == 11
    for _, _, scenes in in_nav:  # every link leads to a scene's section in its chapter's document
        for _, href in scenes:
            fragment, present = _ids(files, href)
            assert fragment in present


def test_a_sixty_scene_story_reads_as_twelve_chapters_in_every_export() -> None:
    story = Story.model_validate(long_story_data())
    assert len(story.chapters) == 12 and len(story.scenes) == 60
    lines = to_markdown(story).split("\n")
    assert [line for line in lines if line.startswith("- [Chapter ")] == [
        f"- [Chapter {n}: Night {n}](#chapter-{n}-night-{n})" for n in range(1, 13)
    ]
    assert [line for line in lines if line.startswith("## Chapter ")] == [
        f"## Chapter {n}: Night {n}" for n in range(1, 13)
    ]
    scene_headings = [line for line in lines if line.startswith("### Scene ")]
    assert scene_headings[0] == "### Scene 1: Night 1, hour 1" and len(scene_headings) == 60
    assert scene_headings[-1] == "### Scene 60: Night 12, hour 5"

    elements = classify(to_fountain(story))
    sections = [text for kind, text in elements if kind == "other" and text.startswith("# ")]
    assert sections == [f"# Chapter {n}: Night {n}" for n in range(1, 13)]
    assert len([kind for kind, _ in elements if kind == "heading"]) == 60

    files = epub_files(story)
    docs = spine_documents(files)
    assert [name for name, _ in docs] == ["title.xhtml", *(f"chapter-{n:02d}.xhtml" for n in range(1, 13))]
    ids = [
        section.get("id") for _, doc in docs for section in doc.iter(f"{XHTML}section") if section.get("id")
    ]
    assert ids == [f"scene-{n}" for n in range(1, 61)]
    nav = ET.fromstring(files["EPUB/nav.xhtml"])
    links = [a.get("href") for a in nav.iter(f"{XHTML}a")]
    assert len(links) == 1 + 12 + 60 and links[-1] == "chapter-12.xhtml#scene-60"
