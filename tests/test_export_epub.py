"""story.epub: an EPUB 3 book that reads back with ebooklib and holds together as a zip."""

from __future__ import annotations

import io
import os
import posixpath
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import pytest
from ebooklib import epub

from storyengine.epub import to_epub
from storyengine.export import write_story
from storyengine.schemas import Story
from test_chapters_read import chaptered_data, long_story_data
from test_quality import PROSE, story_data

XHTML = "{http://www.w3.org/1999/xhtml}"
OPF = "{http://www.idpf.org/2007/opf}"
DC = "{http://purl.org/dc/elements/1.1/}"
HOSTILE = 'Ana reads <script>alert("x")</script> & says "no" </p>'
BIBLE = {
    "characters": [
        {
            "name": "Ana",
            "role": "the lighthouse keeper",
            "description": "She keeps the light.",
            "pronouns": "she/her",
        },
        {"name": "Bo", "role": "her friend", "description": "He rows the ferry.", "pronouns": "he/him"},
    ],
    "setting": "A lighthouse on a rocky island.",
    "facts": ["The bottle is green."],
}


def story(**changes: Any) -> Story:
    return Story.model_validate(story_data(**changes))


def read_back(tmp_path: Path, data: bytes) -> epub.EpubBook:
    path = tmp_path / "story.epub"
    path.write_bytes(data)
    return epub.read_epub(str(path), {"ignore_ncx": True})


def chapters(book: epub.EpubBook) -> list[ET.Element]:
    """The spine's documents as the XHTML stored in the file, parsed as XML."""
    return [ET.fromstring(book.get_item_with_id(idref).content) for idref, _ in book.spine]


def text(element: ET.Element | None) -> str:
    assert element is not None
    return " ".join("".join(element.itertext()).split())


def test_an_epub_round_trip(tmp_path: Path) -> None:
    data = story_data(bible=BIBLE, gaps={"evaluation": "the model gave no valid evaluation"})
    data["evaluation"] = data["enhancement"] = None
    data["scenes"][1]["dialogue"]["lines"][0]["direction"] = "shouting"
    original = Story.model_validate(data)
    book = read_back(tmp_path, to_epub(original))

    assert book.get_metadata("DC", "title")[0][0] == "The Bottle"
    assert book.get_metadata("DC", "language")[0][0] == "en"
    docs = chapters(book)
    assert len(docs) == 1 + len(original.scenes) + 2  # title page, scenes, bible, missing parts
    assert original.premise in text(docs[0].find(f".//{XHTML}body"))
    for doc, item in zip(docs[1:4], original.scenes, strict=True):
        assert text(doc.find(f".//{XHTML}h1")) == item.scene.title
        paragraphs = [text(p) for p in doc.findall(f"{XHTML}body/{XHTML}p")]
        assert paragraphs == [item.scene.setting, " ".join(item.prose.split())]
        dialogue = doc.find(f".//{XHTML}section[@class='dialogue']")
        assert dialogue is not None
        lines = dialogue.findall(f"{XHTML}p")
        assert len(lines) == len(item.dialogue.lines)
        for element, line in zip(lines, item.dialogue.lines, strict=True):
            assert text(element.find(f"{XHTML}b[@class='speaker']")) == line.speaker
            assert text(element).endswith(": " + line.text)
    assert text(docs[2].find(f".//{XHTML}i[@class='direction']")) == "(shouting)"
    assert "She keeps the light." in text(docs[4]) and "The bottle is green." in text(docs[4])
    assert "the model gave no valid evaluation" in text(docs[5])
    nav_titles = [link.title for link in book.toc]
    assert nav_titles == ["The Bottle", "Arrival", "The Storm", "Dawn", "Story bible", "Missing parts"]


def test_without_bible_or_gaps_there_are_only_the_title_page_and_the_scenes(tmp_path: Path) -> None:
    data = story_data()
    data["scenes"][0]["prose"] = ""
    docs = chapters(read_back(tmp_path, to_epub(Story.model_validate(data))))
    assert len(docs) == 1 + 3
    assert "Ana finds the bottle and the message." in text(docs[1])  # the summary stands in for prose
    assert PROSE[1][:60] in text(docs[2])


def test_model_text_is_escaped_and_every_xml_file_parses(tmp_path: Path) -> None:
    data = story_data(bible=BIBLE)
    data["plot"]["title"] = 'Bottles & <b>"Bo"</b>'
    data["scenes"][0]["scene"]["title"] = "Arrival <i>& leaving</i>"
    data["scenes"][0]["prose"] = HOSTILE
    data["scenes"][0]["dialogue"]["lines"][0]["text"] = HOSTILE
    data["bible"]["facts"] = [HOSTILE]
    raw = to_epub(Story.model_validate(data))
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for name in zf.namelist():
            if name.endswith((".xhtml", ".opf", ".ncx", ".xml")):
                root = ET.fromstring(zf.read(name))  # raises if any text broke the XML
                assert not [e for e in root.iter() if e.tag.endswith("script")], name
    book = read_back(tmp_path, raw)
    assert book.get_metadata("DC", "title")[0][0] == 'Bottles & <b>"Bo"</b>'
    docs = chapters(book)
    assert text(docs[1].find(f".//{XHTML}h1")) == "Arrival <i>& leaving</i>"
    assert text(docs[1].findall(f"{XHTML}body/{XHTML}p")[1]) == HOSTILE
    assert text(docs[1].find(f".//{XHTML}section")).startswith("Ana: " + HOSTILE)
    assert HOSTILE in text(docs[4])


def test_characters_xml_does_not_allow_are_dropped(tmp_path: Path) -> None:
    data = story_data()
    data["plot"]["title"] = "The\x02 Bottle"
    data["scenes"][0]["scene"]["title"] = "Arr\x01ival"
    data["scenes"][0]["prose"] = "Bell\x07 rings."
    book = read_back(tmp_path, to_epub(Story.model_validate(data)))
    assert book.get_metadata("DC", "title")[0][0] == "The Bottle"
    docs = chapters(book)
    assert text(docs[1].find(f".//{XHTML}h1")) == "Arrival" and "Bell rings." in text(docs[1])


def test_the_zip_is_a_structurally_valid_epub() -> None:
    raw = to_epub(story(bible=BIBLE, gaps={"enhancement": "not made"}))
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        first = zf.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert zf.read(first) == b"application/epub+zip" and not first.extra
        assert raw[30:38] == b"mimetype" and raw[38:58] == b"application/epub+zip"  # readers sniff this

        container = ET.fromstring(zf.read("META-INF/container.xml"))
        rootfile = container.find(".//{urn:oasis:names:tc:opendocument:xmlns:container}rootfile")
        assert rootfile is not None and rootfile.get("media-type") == "application/oebps-package+xml"
        opf_path = rootfile.get("full-path", "")
        package = ET.fromstring(zf.read(opf_path))  # the OPF exists
        assert package.get("version") == "3.0"

        names = set(zf.namelist())
        base = posixpath.dirname(opf_path)
        manifest = {item.get("id"): item for item in package.iter(f"{OPF}item")}
        for item in manifest.values():
            assert posixpath.join(base, item.get("href", "")) in names, item.attrib
        spine = [ref.get("idref") for ref in package.iter(f"{OPF}itemref")]
        assert spine and all(idref in manifest for idref in spine)
        navs = [item for item in manifest.values() if "nav" in (item.get("properties") or "").split()]
        assert len(navs) == 1
        nav = ET.fromstring(zf.read(posixpath.join(base, navs[0].get("href", ""))))
        toc = nav.find(f".//{XHTML}nav[@{{http://www.idpf.org/2007/ops}}type='toc']")
        assert toc is not None and len(toc.findall(f".//{XHTML}a")) == len(spine)
        ncx = package.find(f"{OPF}spine")
        assert ncx is not None and manifest[ncx.get("toc")].get("media-type") == "application/x-dtbncx+xml"

        metadata = package.find(f"{OPF}metadata")
        assert metadata is not None
        identifier = metadata.find(f"{DC}identifier")
        assert identifier is not None and identifier.get("id") == package.get("unique-identifier")
        assert re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", identifier.text or "")
        assert metadata.find(f"{DC}title") is not None and metadata.find(f"{DC}language") is not None
        modified = [m for m in metadata.iter(f"{OPF}meta") if m.get("property") == "dcterms:modified"]
        assert len(modified) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", modified[0].text or "")


def entries(raw: bytes) -> dict[str, bytes]:
    """Every file of the zip, without the one line that holds the time of writing."""
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    files["EPUB/content.opf"] = re.sub(
        rb"<meta property=\"dcterms:modified\">[^<]*</meta>", b"", files["EPUB/content.opf"]
    )
    return files


def test_the_same_story_is_the_same_book_and_another_story_is_another() -> None:
    first, again = entries(to_epub(story())), entries(to_epub(story()))
    assert first == again
    other = entries(to_epub(story(premise="A ferryman finds a map that draws itself at night.")))
    identifier = re.compile(rb"urn:uuid:[0-9a-f-]+")
    ids = [identifier.findall(files["EPUB/content.opf"]) for files in (first, other)]
    assert ids[0] and ids[1] and ids[0] != ids[1]


def test_write_story_writes_story_epub(tmp_path: Path) -> None:
    paths = write_story(story(), tmp_path / "out")
    assert list(paths) == ["json", "markdown", "fountain", "epub"]
    assert paths["epub"] == tmp_path / "out" / "story.epub"
    book = epub.read_epub(str(paths["epub"]), {"ignore_ncx": True})
    assert book.get_metadata("DC", "title")[0][0] == "The Bottle"


# Debian's epubcheck (apt-get install epubcheck) is a jar; its /usr/bin/epubcheck runs only where
# binfmt_misc knows jars, so it is run with java.
EPUBCHECK = Path("/usr/share/java/epubcheck.jar")


def _hostile_chapters() -> dict[str, Any]:
    data = chaptered_data(bible=BIBLE, gaps={"enhancement": "not made"})
    data["chapters"][0]["title"] = 'Bottles & <b>"Bo"</b>\x02'
    data["chapters"][0]["goal"] = HOSTILE
    data["scenes"][0]["scene"]["title"] = "Arrival <i>& leaving</i>"
    data["scenes"][1]["prose"] = HOSTILE
    return data


EPUBCHECKED = {
    "without chapters": lambda: story_data(bible=BIBLE, gaps={"evaluation": "none"}),
    "three chapters, hostile text": _hostile_chapters,
    "twelve chapters of five scenes": long_story_data,
}


@pytest.mark.skipif(  # scripts/test.sh installs it: CI never skips this
    not (EPUBCHECK.exists() and shutil.which("java")) and not os.environ.get("CI"),
    reason="no epubcheck: apt-get install epubcheck (Debian's, run with java)",
)
@pytest.mark.parametrize("make", EPUBCHECKED.values(), ids=EPUBCHECKED.keys())
def test_epubcheck_finds_nothing_wrong(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "story.epub"
    path.write_bytes(to_epub(Story.model_validate(make())))
    done = subprocess.run(
        ["java", "-jar", str(EPUBCHECK), str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "Messages: 0 fatals / 0 errors / 0 warnings" in report, report
