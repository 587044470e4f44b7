"""Print the fault matrix: how a routed call ends under each fault, how many attempts it took, how long.

Every row is one real call through Router -> Fallback -> Retrying -> OpenAICompatProvider
against a misbehaving server on 127.0.0.1 (tests/faulty_server.py), with the default retry
settings (3 attempts, 0.5 s initial backoff) and real sleeps.

    transient   the fault happens once, then the server answers properly (one provider)
    persistent  the first provider always fails this way; a second, healthy one follows

Usage: .venv/bin/python scripts/fault_matrix.py [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faulty_server import FaultyServer, Trial, run_trial

FAULTS = [
    "500", "429", "401", "hang", "reset", "empty", "garbage", "truncated_json", "cut_body",
    "length", "empty_content", "prose", "slow",
]  # fmt: skip


def outcome(trial: Trial) -> str:
    if trial.error is not None:
        return f"error: {type(trial.error).__name__}"
    if trial.switches:
        return "recovered by fallback"
    if len(trial.attempts) > 1:
        return "recovered by retry"
    return "ok, no retry"


def first_error(trial: Trial) -> str:
    failed = [r for r in trial.attempts if r.outcome != "ok"]
    return (failed[0].error or "").split(":")[0] if failed else "-"


async def transient(fault: str, provider_timeout: float) -> Trial:
    with FaultyServer([fault], delay_s=1.0) as server:
        return await run_trial({"a": server.base_url}, ["a"], timeout=provider_timeout, real_sleep=True)


async def persistent(fault: str, provider_timeout: float) -> Trial:
    with FaultyServer([], then=fault, delay_s=1.0) as broken, FaultyServer([]) as healthy:
        return await run_trial(
            {"a": broken.base_url, "b": healthy.base_url},
            ["a", "b"],
            timeout=provider_timeout,
            real_sleep=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=2.0, help="provider timeout in seconds (default 2)")
    args = parser.parse_args()
    logging.getLogger("storyengine").setLevel(logging.ERROR)  # the fallback warnings are the table
    print("| fault | scenario | outcome | attempts used | first error | waited (s) | time to answer (s) |")
    print("|---|---|---|---|---|---|---|")
    for fault in FAULTS:
        for name, scenario in (("transient", transient), ("persistent", persistent)):
            if fault == "slow" and name == "persistent":
                continue
            trial = await scenario(fault, args.timeout)
            used = ", ".join(
                f"{p} {sum(1 for r in trial.attempts if r.provider == p)}"
                for p in dict.fromkeys(r.provider for r in trial.attempts)
            )
            print(
                f"| {fault} | {name} | {outcome(trial)} | {used} | {first_error(trial)} | "
                f"{sum(trial.sleeps):.2f} | {trial.seconds:.2f} |"
            )


if __name__ == "__main__":
    asyncio.run(main())
