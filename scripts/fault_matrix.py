"""Print the fault matrix: how a routed call ends under each fault, how many attempts it took, how long.

Every row is one real call through Router -> Fallback -> Retrying -> OpenAICompatProvider
against a misbehaving server on 127.0.0.1 (tests/faulty_server.py), with the default retry
settings (3 attempts, 0.5 s initial backoff) and real sleeps.

    transient   the fault happens once, then the server answers properly (one provider)
    persistent  the first provider always fails this way; a second, healthy one follows

Every provider reads its key from FAULT_MATRIX_CREDENTIAL (a name without a secret-looking
suffix); the "key seen" column says whether that key appears in the error or in any run-log
record (the `echo` proxy sends it back in its error page; `echo_answer` in its answer).

Then two measurements: the issue's deadline goal (a server dripping one byte a second, timeout
5 s, 3 attempts) and the circuit breaker (a dead primary in front of a healthy fallback, 20
calls in a row, with the breaker and with it effectively off).

Usage: .venv/bin/python scripts/fault_matrix.py [--timeout SECONDS] [--skip-goal]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faulty_server import TRIAL_REQUEST, FaultyServer, Trial, check_title, run_trial, trial_settings
from storyengine.providers.registry import build_providers
from storyengine.routing.instrument import RunRecorder
from storyengine.routing.router import Router

FAULTS = [
    "500", "429", "401", "hang", "reset", "empty", "garbage", "truncated_json", "cut_body",
    "length", "empty_content", "prose", "slow",
    "drip", "huge", "huge_chunked", "parts", "redirect", "echo", "echo_answer", "bad_gzip", "no_finish",
]  # fmt: skip
ONLY_TRANSIENT = {"slow", "parts", "no_finish"}  # answers that are fine: no fallback to show
KEY_ENV = "FAULT_MATRIX_CREDENTIAL"
KEY = "fm-cred-5d1c9e07a3b4f628"


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


def key_seen(trial: Trial) -> str:
    texts = [str(trial.error or "")] + [r.model_dump_json() for r in trial.records]
    if trial.completion is not None:
        texts.append(trial.completion.text)
    return "YES" if any(KEY in text for text in texts) else "no"


async def transient(fault: str, provider_timeout: float) -> Trial:
    with FaultyServer([fault], delay_s=1.0, drip_s=1.0) as server:
        return await run_trial(
            {"a": server.base_url}, ["a"], timeout=provider_timeout, real_sleep=True, api_key_env=KEY_ENV
        )


async def persistent(fault: str, provider_timeout: float) -> Trial:
    with FaultyServer([], then=fault, delay_s=1.0, drip_s=1.0) as broken, FaultyServer([]) as healthy:
        return await run_trial(
            {"a": broken.base_url, "b": healthy.base_url},
            ["a", "b"],
            timeout=provider_timeout,
            real_sleep=True,
            api_key_env=KEY_ENV,
        )


async def drip_goal() -> None:
    with FaultyServer([], then="drip", drip_s=1.0) as server:
        trial = await run_trial({"a": server.base_url}, ["a"], timeout=5.0, attempts=3, real_sleep=True)
    print(
        f"\nDeadline goal: a body dripping one byte a second, timeout 5 s, 3 attempts: "
        f"{type(trial.error).__name__} after {trial.seconds:.1f} s ({len(trial.attempts)} attempts, "
        f"{sum(trial.sleeps):.1f} s of backoff; goal <= 25 s)"
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def breaker_run(calls: int, breaker_failures: int) -> tuple[float, int, int]:
    """`calls` calls through [dead primary, healthy fallback]: (seconds, primary attempts, answers)."""
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with FaultyServer([]) as healthy:
        settings = trial_settings(
            {"a": dead, "b": healthy.base_url}, ["a", "b"], breaker_failures=breaker_failures
        )
        router = Router(settings, build_providers(settings))
        recorder = RunRecorder("breaker")
        started = time.perf_counter()
        answered = 0
        try:
            with recorder.active():
                for _ in range(calls):
                    check_title(await router.generate(TRIAL_REQUEST, check=check_title))
                    answered += 1
        finally:
            await router.aclose()
        seconds = time.perf_counter() - started
    primary = sum(1 for r in recorder.records if r.kind == "attempt" and r.provider == "a")
    return seconds, primary, answered


async def breaker_table(calls: int = 20) -> None:
    print(f"\nCircuit breaker: a dead primary (connection refused) before a healthy fallback, {calls} calls")
    print("(default retry: 3 attempts, 0.5 s initial backoff)\n")
    print("| breaker | calls answered | attempts on the dead primary | wall time (s) | per call (s) |")
    print("|---|---|---|---|---|")
    for label, failures in (("on (3 failures, 60 s cooldown)", 3), ("off (1000 failures)", 1000)):
        seconds, primary, answered = await breaker_run(calls, failures)
        print(f"| {label} | {answered} of {calls} | {primary} | {seconds:.2f} | {seconds / calls:.2f} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=2.0, help="provider timeout in seconds (default 2)")
    parser.add_argument(
        "--skip-goal", action="store_true", help="skip the deadline goal and the breaker runs"
    )
    args = parser.parse_args()
    os.environ[KEY_ENV] = KEY
    logging.getLogger("storyengine").setLevel(logging.ERROR)  # the fallback warnings are the table
    print(
        "| fault | scenario | outcome | attempts used | first error | waited (s) | time to answer (s) "
        "| key seen |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fault in FAULTS:
        for name, scenario in (("transient", transient), ("persistent", persistent)):
            if fault in ONLY_TRANSIENT and name == "persistent":
                continue
            trial = await scenario(fault, args.timeout)
            used = ", ".join(
                f"{p} {sum(1 for r in trial.attempts if r.provider == p)}"
                for p in dict.fromkeys(r.provider for r in trial.attempts)
            )
            print(
                f"| {fault} | {name} | {outcome(trial)} | {used} | {first_error(trial)} | "
                f"{sum(trial.sleeps):.2f} | {trial.seconds:.2f} | {key_seen(trial)} |"
            )
    if not args.skip_goal:
        await drip_goal()
        await breaker_table()


if __name__ == "__main__":
    asyncio.run(main())
