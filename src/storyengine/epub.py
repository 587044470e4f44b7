"""A Story as an EPUB 3 book (story.epub), written with ebooklib.

The book reads as story.md's story part does: a title page with the premise, then one chapter
per scene (its title, setting, the prose — `StoryScene.prose`, else the summary — and its
dialogue set apart, each line as speaker, direction and speech), then the story bible and a note
of the parts that are missing, when there are any. The plot, evaluation and enhancement stay in
story.md's appendix. A navigation document and an NCX make the table of contents.

A story with chapters has one document per chapter instead (its heading "Chapter N: Title", its
goal, then its scenes, each a section under its own heading), and a table of contents two levels
deep: each chapter, and under it links to its scenes.

Every text from a model is escaped before it becomes XHTML, without the characters XML does not
allow. The language is declared as English (`en`). The identifier is derived from the story's
content, so the same story is the same book; `dcterms:modified` and the zip entries' times are
the time of writing, so two exports of one story differ only in those.
"""

from __future__ import annotations

import html
import io
import re
import uuid
from datetime import UTC, datetime

from ebooklib import epub

from .hashing import canonical_json, sha256_hex
from .quality import scene_prose
from .schemas import Story, StoryScene

CSS = """\
body { font-family: serif; line-height: 1.5; margin: 0 5%; }
h1 { text-align: center; margin: 1.5em 0 .3em; }
p { margin: 0 0 .8em; }
.premise, .setting { font-style: italic; text-align: center; }
.dialogue { margin-top: 1.5em; padding-top: .8em; border-top: 1px solid #999; }
.dialogue p { margin: 0 0 .5em 1.5em; text-indent: -1.5em; }
.speaker { font-variant: small-caps; font-weight: bold; }
.direction { font-style: italic; font-weight: normal; }
"""
CHAPTER_CSS = """\
h2 { text-align: center; margin: 2em 0 .3em; }
.goal { font-style: italic; text-align: center; }
"""

# Characters XML 1.0 does not allow (control characters, lone surrogates, U+FFFE/U+FFFF).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def to_epub(story: Story) -> bytes:
    """The story as the bytes of an EPUB 3 file."""
    title = _xml_safe(_one_line(story.plot.title or "Untitled story"))
    book = epub.EpubBook()
    book.set_identifier(story_identifier(story))
    book.set_title(title)
    book.set_language("en")
    css = CSS + CHAPTER_CSS if story.chapters else CSS
    style = epub.EpubItem(uid="style", file_name="style.css", media_type="text/css", content=css)
    book.add_item(style)

    chapters = [
        _chapter("title", "title.xhtml", title, [_h1(title), _p(story.premise, "premise")]),
    ]
    scene_links: dict[str, list[epub.Link]] = {}  # a chapter's document: its scenes in the contents
    number = 0
    for n, (chapter, items) in enumerate(story.chapter_scenes(), 1):
        if chapter is None:  # no chapters: a document per scene
            for number, item in enumerate(items, 1):
                uid, file_name = f"scene-{number}", f"scene-{number:02d}.xhtml"
                chapters.append(_chapter(uid, file_name, item.scene.title, _scene(item, "h1")))
            continue
        uid, file_name, heading = f"chapter-{n}", f"chapter-{n:02d}.xhtml", f"Chapter {n}: {chapter.title}"
        body, scene_links[uid] = [_h1(heading), _p(chapter.goal, "goal")], []
        for item in items:
            number += 1
            body += [f'<section class="scene" id="scene-{number}">', *_scene(item, "h2"), "</section>"]
            scene_title = _xml_safe(_one_line(item.scene.title))
            scene_links[uid].append(epub.Link(f"{file_name}#scene-{number}", scene_title, f"scene-{number}"))
        chapters.append(_chapter(uid, file_name, heading, body))
    if story.bible is not None:
        body = [_h1("Story bible"), "<dl>"]
        for c in story.bible.characters:
            body.append(f"<dt>{_text(c.name)} ({_text(c.pronouns)}), {_text(c.role)}</dt>")
            body.append(f"<dd>{_text(c.description)}</dd>")
        body += ["</dl>", f"<p><b>Setting:</b> {_text(story.bible.setting)}</p>"]
        if story.bible.facts:
            body += ["<ul>", *(f"<li>{_text(fact)}</li>" for fact in story.bible.facts), "</ul>"]
        chapters.append(_chapter("bible", "bible.xhtml", "Story bible", body))
    if story.gaps:
        body = [_h1("Missing parts"), _p("What the model could not make for this story, and why:"), "<ul>"]
        body += [f"<li><b>{_text(part)}</b>: {_text(why)}</li>" for part, why in story.gaps.items()]
        body.append("</ul>")
        chapters.append(_chapter("missing", "missing.xhtml", "Missing parts", body))

    for chapter in chapters:
        chapter.add_item(style)
        book.add_item(chapter)
    book.toc = [(doc, scene_links[doc.id]) if doc.id in scene_links else doc for doc in chapters]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = chapters
    out = io.BytesIO()
    writer = epub.EpubWriter(out, book, {"mtime": datetime.now(UTC)})  # raises, unlike write_epub
    writer.process()
    writer.write()
    return out.getvalue()


def story_identifier(story: Story) -> str:
    """A UUID URN from the story's content: equal stories, equal identifiers."""
    digest = sha256_hex(canonical_json(story.model_dump(mode="json")))
    return uuid.uuid5(uuid.NAMESPACE_URL, f"storyengine:story:{digest}").urn


def _chapter(uid: str, file_name: str, title: str, body: list[str]) -> epub.EpubHtml:
    chapter = epub.EpubHtml(uid=uid, file_name=file_name, title=_xml_safe(_one_line(title)), lang="en")
    chapter.content = "<html><body>" + "\n".join(body) + "</body></html>"
    return chapter


def _scene(item: StoryScene, heading: str) -> list[str]:
    """A scene's XHTML under a heading element `heading` (h1 for a document of its own, h2 in a
    chapter): its title, setting, prose and dialogue."""
    body = [f"<{heading}>{_text(item.scene.title)}</{heading}>", _p(item.scene.setting, "setting")]
    body += [_p(paragraph) for paragraph in _paragraphs(scene_prose(item))]
    body.append('<section class="dialogue">')
    for line in item.dialogue.lines:
        direction = f' <i class="direction">({_text(line.direction)})</i>' if line.direction else ""
        speaker = f'<b class="speaker">{_text(line.speaker)}</b>{direction}'
        body.append(f'<p class="line">{speaker}: {_text(line.text)}</p>')
    body.append("</section>")
    return body


def _h1(text: str) -> str:
    return f"<h1>{_text(text)}</h1>"


def _p(text: str, css_class: str | None = None) -> str:
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<p{attribute}>{_text(text)}</p>"


def _text(text: str) -> str:
    """Text on one line, escaped for XHTML, without characters XML does not allow."""
    return html.escape(_xml_safe(_one_line(text)), quote=True)


def _xml_safe(text: str) -> str:
    return _NOT_XML.sub("", text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _paragraphs(text: str) -> list[str]:
    """The paragraphs of a prose text, split on blank lines (as story.md splits them)."""
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]
