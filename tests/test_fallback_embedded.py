"""A chain [a real server that fails in several ways, the real embedded model] still writes the plot.

The fallback is asked the way it needs: the server is a `standard` provider (whole objects),
the packaged SmolLM2 is `tiny` (in parts, with its grammar), so the plot that comes back is
valid and sane, not a one-shot answer from a model that cannot write one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faulty_server import FaultyServer
from storyengine.config import parse_settings
from storyengine.pipeline.engine import StoryEngine
from storyengine.pipeline.steps import Inputs
from storyengine.schemas import PlotStructure

pytestmark = pytest.mark.model

# Each trial: the server's answers in order, then what it keeps answering.
TRIALS = {
    "prose-then-500": (["prose", "prose", "500"], "500"),
    "garbage-reset-empty": (["garbage", "reset", "empty_content", "truncated_json"], "prose"),
}


@pytest.mark.parametrize("trial", sorted(TRIALS))
async def test_the_embedded_fallback_writes_a_valid_plot_in_parts(trial: str, tmp_path: Path) -> None:
    script, then = TRIALS[trial]
    with FaultyServer(script, then=then) as server:
        settings = parse_settings(
            f"""
narrative:
  providers: {{plot: [server, embedded], scene: embedded, dialogue: embedded, evaluation: embedded,
              enhancement: embedded, summarize: embedded}}
providers:
  server: {{type: openai, base_url: "{server.base_url}", model: big, timeout: 5}}
  embedded: {{type: embedded}}
retry: {{attempts: 2, backoff_initial: 0, backoff_max: 0}}
cache: {{enabled: false}}
logging: {{runlog: {tmp_path / "runs.sqlite3"}, dir: {tmp_path / "logs"}}}
""",
            source="trial.yaml",
        )
        async with StoryEngine.from_config(settings=settings) as engine:
            premise = "A lighthouse keeper finds a message in a bottle written by her future self."
            made = await engine.step("plot", Inputs(premise=premise, beats=3), seed=7)
    plot, meta = made.value, made.meta["plot"]
    assert isinstance(plot, PlotStructure) and len(plot.beats) == 3
    assert server.requests >= 2  # the server was asked (and failed) first
    assert meta["provider"] == "embedded" and meta["profile"] == "tiny"
    assert meta["structured_mode"].endswith("(in parts)")
    assert meta["fallbacks"] and meta["fallbacks"][0]["from"] == ["server"]
    assert plot.structure_type != "][" and all(not b.name.isdigit() for b in plot.beats)
