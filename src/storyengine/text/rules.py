"""The rules about text: each one finds a problem in a field and, where it is safe, repairs it.

A rule is registered with a name, the fields it applies to (by the field's key: "title",
"purpose", "text", "character", ...), the languages it knows (None: every language) and a
check that returns a `Hit` or None. A Hit says what was found (evidence), what to tell the
model in a re-ask (a sentence with no example values a model could copy), and the repaired
text when code can repair it safely; `unusable` says nothing of the text is worth keeping
(an optional field becomes null, a list item is dropped). `review.py` applies the rules in
registration order, each to the text the earlier ones repaired, and decides what happens:
repair, re-ask once, or keep and record.

A rule that knows only English (`languages={"en"}`: fragments such as "bott", dangling words
such as "the", meta talk, descriptions instead of speech) does not run on other languages.

The rules and why each exists (what was measured in stories that passed the old rules or
failed runs on them):
- control: NUL and other control characters (not line breaks or tabs) are removed.
- null_text: "null", "None", "N/A" as a field's whole text is no text.
- timestamp: a machine timestamp ("2019-13-25T14:38:07.628ZMAD") is cut from the text; what
  follows it on the same field is debris more often than not, so the field ends before it when
  two words or more come first (a setting "Ashwood, England, 2019-…" failed two stories).
- debris: JSON syntax, the schema's own words, code calls; the sentences holding it are
  dropped when others remain, else the field ends before it.
- gibberish: letter runs ("zwzwzw"), tokens of letters and many digits ("jsonp1234567890"),
  paths and identifiers ("./the_story"); the field ends before it.
- loop: a phrase said over and over (loops.loop_at); the field keeps the first saying.
- leading_mark: a field that begins with punctuation (", a lighthouse keeper, stands …": a
  name was dropped); re-asked, not repaired (the missing word is unknown).
- meta_talk (English): sentences about the story rather than of it ("This is the first scene
  of a series…", "The first paragraph is about the setting:"); dropped.
- copied_instruction: a title or setting that copies an instruction the prompt gave (a beat's
  purpose, a beat opener such as "At the climax,"); re-asked (a scene's title is then repaired
  from its beat's name by review.py).
- dangling_mark: a comma, semicolon or colon left at the end ("The Beat ,", "no end,.").
- cut_off: prose that stops on a comma (any script); in English also a fragment ("the bott")
  or a dangling word ("of the"); the field ends at its last whole sentence when it has one.
- not_a_name: a character's name is one to four words, capitalised in scripts with case, not
  a placeholder or a description ("wearing white robes and armor"); a lower-case name ("bo") is
  capitalised.
- not_speech: a dialogue line that is a label list, a bullet list or only a stage direction;
  in English also a description ("the keeper of the glass door").

Where they live: rule_base.py (the field kinds, `Context`, `Hit`, `Rule`), trimming.py (how a
repair cuts junk out), junk_rules.py, ending_rules.py and people_rules.py (the rules, each
module's in the order they run), similarity.py (copies). `RULES` below is every rule in the order
they run; every name is importable from here.
"""

from __future__ import annotations

from . import ending_rules, junk_rules, people_rules
from .ending_rules import fragment
from .junk_rules import copies, meta_sentence, without_controls
from .people_rules import capitalise_lower_case, person_name_problem
from .rule_base import ALL, LABELS, PEOPLE, PROSE, SPEECH, Context, Hit, Rule, clip
from .similarity import first_similar, similar
from .trimming import tidy_end

# Every rule, in the order review.py applies them (each to the text the earlier ones repaired).
RULES: list[Rule] = [*junk_rules.RULES, *ending_rules.RULES, *people_rules.RULES]


def findings_in(text: str, key: str, context: Context) -> list[tuple[str, Hit]]:
    """Every rule of field `key` on `text` as it is (no repair chained): what a report counts."""
    found = []
    for each in RULES:
        if each.applies(key, context.language):
            hit = each.check(text, context)
            if hit is not None:
                found.append((each.name, hit))
    return found


__all__ = [
    "ALL",
    "LABELS",
    "PEOPLE",
    "PROSE",
    "RULES",
    "SPEECH",
    "Context",
    "Hit",
    "Rule",
    "capitalise_lower_case",
    "clip",
    "copies",
    "findings_in",
    "first_similar",
    "fragment",
    "meta_sentence",
    "person_name_problem",
    "similar",
    "tidy_end",
    "without_controls",
]
