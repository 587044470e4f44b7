"""Every error storyengine raises, each with a message that says what failed and what to do.

StoryEngineError
├── ConfigError              config.yaml or an option is wrong (names the key and the file)
├── InputError               a premise, option or path given by the user is unusable
├── TemplateError            a POML template is missing, broken or lacks a variable
├── ProviderError            one provider failed one call (`.provider`, `.retryable`)
│   ├── ProviderUnavailable  connection refused or reset, DNS failure
│   │   └── ProviderDown          the circuit breaker skips it until `.until` (after failures in a row)
│   ├── ProviderTimeout      no complete answer within the timeout (connect to last byte)
│   ├── ProviderHTTPError    the server answered with an error status (`.status`)
│   │   ├── AuthenticationError   401/403: the API key is missing or wrong
│   │   ├── RateLimited           429 (`.retry_after` seconds, when the server said)
│   │   │   └── ProviderBusy          its Retry-After is longer than retry.backoff_max: not waited for
│   │   └── ProviderRedirect      3xx: the base URL moved (`.location`)
│   ├── BadResponse          the server's answer is not a usable completion
│   │   └── ResponseTooLarge      the body is over the provider's max_response_bytes
│   ├── EmptyOutput          the model returned nothing
│   ├── TruncatedOutput      finish_reason == "length": the answer was cut off
│   ├── ModelLoadError       the embedded GGUF file is missing, corrupt or unloadable
│   └── ModelError           the embedded model failed while generating
├── AllProvidersFailed       every provider in a fallback chain failed (`.failures`)
├── SchemaValidationError    (also a ValueError) text that is not a valid object
├── StructuringError         stage 2 gave no valid object within its attempts
└── RunFailed                a run stopped at a step; its finished steps are saved (`.run_id`)
"""

from __future__ import annotations

from typing import Any


class StoryEngineError(Exception):
    """Base class of every storyengine error."""


class ConfigError(StoryEngineError):
    pass


class InputError(StoryEngineError):
    pass


class TemplateError(StoryEngineError):
    pass


class ProviderError(StoryEngineError):
    retryable: bool = False

    # The answer that was refused (empty, cut off), when one arrived; set by the wrapper that vetted it.
    completion: Any = None

    def __init__(self, message: str, *, provider: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        if retryable is not None:
            self.retryable = retryable


class ProviderUnavailable(ProviderError):
    retryable = True


class ProviderDown(ProviderUnavailable):
    """The circuit breaker has marked the provider down; calls skip it until `until` (epoch seconds)."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", until: float = 0.0) -> None:
        super().__init__(message, provider=provider, retryable=False)
        self.until = until


class ProviderTimeout(ProviderError):
    retryable = True


class ProviderHTTPError(ProviderError):
    def __init__(self, message: str, *, provider: str = "", status: int = 0) -> None:
        super().__init__(message, provider=provider, retryable=status >= 500)
        self.status = status


class AuthenticationError(ProviderHTTPError):
    pass


class RateLimited(ProviderHTTPError):
    retryable = True

    def __init__(self, message: str, *, provider: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, status=429)
        self.retryable = True
        self.retry_after = retry_after


class ProviderBusy(RateLimited):
    """A 429 whose Retry-After is longer than the retry layer may wait (retry.backoff_max).

    Not retried: sleeping less than the server asked would only earn another 429, and sleeping as
    long as it asked would stall the run. The circuit breaker skips the provider for
    `retry_after` seconds instead, so a fallback chain moves on at once."""

    def __init__(self, message: str, *, provider: str = "", retry_after: float) -> None:
        super().__init__(message, provider=provider, retry_after=retry_after)
        self.retryable = False


class ProviderRedirect(ProviderHTTPError):
    """The server answered with a redirect; storyengine does not follow it (it would resend the key)."""

    def __init__(self, message: str, *, provider: str = "", status: int = 0, location: str = "") -> None:
        super().__init__(message, provider=provider, status=status)
        self.location = location


class BadResponse(ProviderError):
    retryable = True


class StreamInterrupted(BadResponse):
    """A stream the server ended (`[DONE]`) before the answer finished (no finish_reason): the
    same request read whole is not cut (llama_cpp.server interrupts a streamed answer whenever
    another request waits, unless started with --interrupt_requests false)."""


class ResponseTooLarge(BadResponse):
    """Retryable like any bad answer: each try reads at most the limit, so a retry costs little."""


class EmptyOutput(ProviderError):
    retryable = True


class TruncatedOutput(ProviderError):
    retryable = True


class ModelLoadError(ProviderError):
    pass


class ModelError(ProviderError):
    """The embedded model raised while generating (llama.cpp's RuntimeError and the like)."""

    retryable = True


class AllProvidersFailed(StoryEngineError):
    def __init__(self, component: str, failures: list[tuple[str, BaseException]]) -> None:
        self.component = component
        self.failures = failures
        lines = "; ".join(f"{name}: {err}" for name, err in failures)
        super().__init__(f"every provider failed for {component}: {lines}")


class SchemaValidationError(StoryEngineError, ValueError):
    """Text that does not hold a valid object, with everything needed to see why."""

    completion: Any = None  # the answer whose text this is, when it came from a provider
    # False: not worth the retry layer's further attempts (an optional part, left out instead);
    # the caller's one re-ask with the errors still happens.
    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        raw_text: str,
        parse_error: str | None = None,
        validation_errors: list[dict[str, Any]] | None = None,
        repaired_text: str | None = None,
    ) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.parse_error = parse_error
        self.validation_errors = validation_errors or []
        self.repaired_text = repaired_text


class StructuringError(StoryEngineError):
    """Stage 2 could not produce a valid object; carries every attempt's raw text and errors."""

    def __init__(self, message: str, *, component: str, attempts: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.component = component
        self.attempts = attempts


class RunFailed(StoryEngineError):
    """A run stopped; everything it finished is checkpointed and `resume` continues it."""

    def __init__(self, message: str, *, run_id: str, step: str, cause: BaseException) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.step = step
        self.cause = cause


def is_output_problem(error: BaseException) -> bool:
    """True for an answer that arrived but is unusable (as opposed to a failed call)."""
    return isinstance(error, EmptyOutput | TruncatedOutput | SchemaValidationError)
