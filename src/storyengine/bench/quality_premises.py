"""Premises for `bench quality`, written for this project (not taken from any published set).

Each names concrete people, places and things, so that premise coverage (the share of a
premise's content words the story uses) says whether a story stayed on its premise. They vary
in genre, cast size and tone, and none is long.
"""

from __future__ import annotations

from ..errors import InputError

QUALITY_PREMISES: tuple[str, ...] = (
    "A ferry captain finds a stowaway child who claims to be her own grandmother.",
    "Two beekeepers on a windy island must save their hives before a cold snap.",
    "A night-shift baker hides a fugitive inside the flour store of a busy bakery.",
    "A retired boxer coaches his granddaughter for a fight he once threw for money.",
    "An archivist discovers a letter that proves her town was founded by a lie.",
    "A tram driver in a flooded city keeps one route running for a stranded hospital.",
    "A puppeteer learns that one of his marionettes moves when the theatre is empty.",
    "A goatherd and a surveyor argue over a mountain pass the government wants to close.",
    "A violin repairer is asked to fix the instrument that killed its last player.",
    "A chess club in a prison plans an escape through a tournament in the city.",
    "A widow sells lemonade outside a bank to watch the robbers she suspects.",
    "A young midwife must cross a frozen lake at night to reach a farmhouse.",
    "A forger copies a painting so well that the museum keeps the copy instead.",
    "Twin brothers inherit one bicycle shop and refuse to share the keys.",
    "A radio host gets calls from a listener who describes tomorrow's weather exactly.",
    "A shepherd dog guides a lost hiker down a glacier during a snowstorm.",
    "A clockmaker in a border town repairs the church clock that marks the curfew.",
    "A pastry chef enters a royal contest with her rival's stolen recipe book.",
    "A diver searching a sunken liner finds a cabin that is still dry.",
    "A schoolteacher in a mining village hides the last books the council banned.",
    "Three elderly friends rob the casino that cheated their late husband.",
    "A botanist on a research station finds a seed that grows only when she sings.",
    "A taxi driver carries a passenger who pays with coins from a vanished kingdom.",
    "A lighthouse cook feeds a shipwrecked crew while a storm cuts off the supply boat.",
    "A circus tightrope walker must cross between two towers to deliver a ransom.",
    "A gardener finds a buried telephone in the orchard, and it rings every dusk.",
    "A locksmith's apprentice is framed for a burglary at the mayor's house.",
    "Two translators fall in love while interpreting a tense trade negotiation.",
    "A fisherman's daughter races a corrupt harbour master to claim a stranded whale.",
    "A blind piano tuner hears a confession hidden in the notes of an old piano.",
)


def quality_premises(count: int) -> list[str]:
    """The first `count` premises of the quality set."""
    if not 1 <= count <= len(QUALITY_PREMISES):
        raise InputError(
            f"--premises must be between 1 and {len(QUALITY_PREMISES)} (the quality set), not {count}"
        )
    return list(QUALITY_PREMISES[:count])
