"""Premises for the validity and peer benches: varied in genre, length, cast and tone."""

from __future__ import annotations

from ..errors import InputError

PREMISES: tuple[str, ...] = (
    "A lighthouse keeper finds a message in a bottle addressed to her, dated fifty years from now.",
    "Two rival chefs must cook together to save the restaurant where they both trained.",
    "A child discovers that the family dog can read, and has been hiding the newspaper for years.",
    "On a generation ship, the last person who remembers Earth refuses to die until someone listens.",
    "A small-town mayor fakes a UFO sighting to bring in tourists, and then the real ones arrive.",
    "A translator at a peace summit realizes both delegations are lying in the same way.",
    "An elderly jazz pianist teaches a deaf teenager to feel music through the floorboards.",
    "A detective in 1920s Cairo investigates a theft from a museum that was never robbed.",
    "After a flood, a village finds a stranger asleep in the church bell tower with no memory.",
    "A wedding planner is hired by her ex-fiancé to organize his wedding.",
    "A robot vacuum becomes self-aware and decides its purpose is to clean up its owner's life.",
    "Three sisters inherit a vineyard on the condition that they live there for one harvest.",
    "A mountain rescue pilot must choose between two stranded climbers during a storm.",
    "A librarian notices that one book keeps returning itself to the shelf with new chapters.",
    "Space miners on an asteroid find a door that can only be opened from the inside.",
    "A teenage chess prodigy suspects her coach is throwing her matches.",
    "In a city where it always rains, a weather forecaster predicts a sunny day and is arrested.",
    "A ghost haunts a house that no one has lived in for a century and is very lonely.",
    "A baker in Lyon receives anonymous orders for cakes that predict the town's scandals.",
    "Two astronauts on the far side of the Moon lose contact with Earth during an argument.",
    "A dragon applies for a job as a bank vault guard and takes the interview very seriously.",
    "A nurse on a night shift keeps meeting a patient who was discharged a week ago.",
    "A folk singer's song about a missing girl leads to a confession in a roadside bar.",
    "During a blackout, the residents of an apartment block meet each other for the first time.",
    "A cartographer's maps start showing roads that appear the next morning.",
    "A disgraced magician must perform one last trick to clear his daughter's name.",
    "An AI that writes greeting cards starts slipping warnings into the verses.",
    "A fisherman hauls up a locked chest with his own childhood drawings inside.",
    "Rival beekeepers feud over a swarm that settled exactly on their shared fence.",
    "A train conductor realizes the night express stops at a station missing from every map.",
    "A soldier returns from war to find that his hometown has voted to forget the war happened.",
    "A quiet accountant discovers she is the heir to a kingdom that exists only on paper.",
    "A marine biologist befriends an octopus that steals her research notes.",
    "Students at a boarding school find their exam answers written in a diary from 1890.",
)


def premises(count: int, first: int = 1) -> list[str]:
    """`count` built-in premises from number `first` (1-based): a long bench runs in parts this way."""
    if not 1 <= first <= len(PREMISES):
        raise InputError(f"--first must be between 1 and {len(PREMISES)} (the built-in list), not {first}")
    left = len(PREMISES) - first + 1
    if not 1 <= count <= left:
        raise InputError(
            f"--premises must be between 1 and {left} (the built-in list from premise {first}), not {count}"
        )
    return list(PREMISES[first - 1 : first - 1 + count])
