"""Model profiles: the one place a model's quirks live.

A profile says how a model is asked, not what counts as a good answer (the text rules of
storyengine/text hold for every model). It is chosen per provider in config (`profile: tiny |
standard`); without one, the packaged SmolLM2-135M file is `tiny` and everything else is
`standard`.

    tiny      stage 2 fills objects one small piece at a time (pipeline/parts.py), with the
              aids a 135M model needs: beat purposes that open with their job, new names with
              unused initials, bounded decoding of every piece; no fact check of scene drafts
              (a 135M model answers "which facts does this contradict" at chance); one scene
              draft per scene (a draft costs ~5 s of a 2-core CPU; more are drawn only when a
              check finds problems)
    standard  stage 2 asks for the whole object at once, with the server's structured output;
              each scene draft is checked against the bible's facts by the model; three scene
              drafts per scene, the best by drafts.draft_score kept
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ProfileName = Literal["tiny", "standard"]


@dataclass(frozen=True)
class Profile:
    name: ProfileName
    structure_in_parts: bool
    checks_facts: bool
    scene_drafts: int  # stage-1 drafts per scene, the best kept by code (narrative.scene_drafts)


PROFILES: dict[str, Profile] = {
    "tiny": Profile("tiny", structure_in_parts=True, checks_facts=False, scene_drafts=1),
    "standard": Profile("standard", structure_in_parts=False, checks_facts=True, scene_drafts=3),
}
