"""The fastest a story can possibly run: a lower bound from the pipeline's dependency graph.

Every model call is one task of the same length L (the server's fixed latency), run on k
slots. The tasks of a story with n scenes, and what each waits for:

    plot.draft                                  (nothing)
    plot                                        plot.draft
    scene i draft      (i = 1..n)               plot
    scene i            (structured)             scene i draft
    dialogue i draft                            scenes 1..i structured (it is told what came before)
    dialogue i                                  dialogue i draft
    evaluation.draft                            every scene and dialogue
    evaluation                                  evaluation.draft
    enhancement.draft                           evaluation
    enhancement                                 enhancement.draft

2 + 4n + 4 calls. Two facts bound any schedule on k slots, in steps of L:

- chain: a task at depth d (d tasks on the longest path ending in it) cannot end before step d;
- work: at most k tasks run per step.

Combined (the bound used here): for every depth d and height h (tasks on the longest path
starting at a task), the tasks with depth >= d and height >= h cannot start before step
d - 1, need ceil(count / k) steps of their own, and leave h - 1 steps of successors after
the last of them ends, so

    steps >= (d - 1) + ceil(count(d, h) / k) + (h - 1)      for every d, h.

With d = h = 1 this is the plain work bound, with count 1 the longest path. For n = 6 and
k = 4: 2 plot steps + ceil(24 / 4) = 6 middle steps + 4 final steps = 12 L, while the longest
path alone says 10 L. `greedy_steps` schedules the graph (longest remaining path first) to
show how tight the bound is: when the two agree, the bound is the optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Graph:
    """Tasks by name, each with the names of the tasks it waits for, in topological order."""

    needs: dict[str, tuple[str, ...]]

    def depths(self) -> dict[str, int]:
        depth: dict[str, int] = {}
        for task, before in self.needs.items():
            depth[task] = 1 + max((depth[b] for b in before), default=0)
        return depth

    def heights(self) -> dict[str, int]:
        after: dict[str, list[str]] = {task: [] for task in self.needs}
        for task, before in self.needs.items():
            for b in before:
                after[b].append(task)
        height: dict[str, int] = {}
        for task in reversed(list(self.needs)):
            height[task] = 1 + max((height[a] for a in after[task]), default=0)
        return height


def story_graph(scenes: int) -> Graph:
    """The call graph of a story with `scenes` scenes (one structured beat per scene)."""
    if scenes < 1:
        raise ValueError("a story has at least one scene")
    needs: dict[str, tuple[str, ...]] = {"plot.draft": (), "plot": ("plot.draft",)}
    needs["bible.draft"] = ("plot",)  # the story bible: who is who, before any scene is written
    needs["bible"] = ("bible.draft",)
    for i in range(scenes):
        needs[f"scene.{i}.draft"] = ("bible",)
        needs[f"scene.{i}"] = (f"scene.{i}.draft",)
    for i in range(scenes):
        needs[f"dialogue.{i}.draft"] = tuple(f"scene.{j}" for j in range(i + 1))
        needs[f"dialogue.{i}"] = (f"dialogue.{i}.draft",)
    middle = tuple(f"scene.{i}" for i in range(scenes)) + tuple(f"dialogue.{i}" for i in range(scenes))
    needs["evaluation.draft"] = middle
    needs["evaluation"] = ("evaluation.draft",)
    needs["enhancement.draft"] = ("evaluation",)
    needs["enhancement"] = ("enhancement.draft",)
    return Graph(needs)


def lower_bound_steps(graph: Graph, slots: int) -> int:
    """The least number of steps (of one call each) any schedule on `slots` slots needs."""
    depth, height = graph.depths(), graph.heights()
    best = 0
    for d in set(depth.values()):
        for h in set(height.values()):
            count = sum(1 for t in graph.needs if depth[t] >= d and height[t] >= h)
            if count:
                best = max(best, (d - 1) + math.ceil(count / slots) + (h - 1))
    return best


def greedy_steps(graph: Graph, slots: int) -> int:
    """Steps of a list schedule that runs the ready tasks with the longest remaining path first."""
    height = graph.heights()
    done: set[str] = set()
    steps = 0
    while len(done) < len(graph.needs):
        ready = [t for t, before in graph.needs.items() if t not in done and all(b in done for b in before)]
        ready.sort(key=lambda t: -height[t])
        done.update(ready[:slots])
        steps += 1
    return steps
