"""One provider for every OpenAI-compatible server: LM Studio, Ollama (/v1), vLLM, llama.cpp, OpenAI.

A server is a base URL, an API-key environment variable and a structured-output mode:

    json_schema         response_format {"type": "json_schema", "json_schema": {name, schema, strict}}
    json_object_schema  response_format {"type": "json_object", "schema": ...} (llama_cpp.server 0.3)
    ollama_format       top-level "format": schema (Ollama's OpenAI endpoint)
    tool_call           one function tool whose parameters are the schema, forced by tool_choice
    none                nothing: the caller structures by prompt alone

The API key is read from the environment at each call and sent as a Bearer token; it never
appears in an error, a log line or a repr: every text taken from the server (an error page, a
redirect target, the answer itself) is scrubbed of every secret value (see storyengine.secrets)
before it goes anywhere.

A call's timeout is a deadline for the whole answer, from connecting to its last byte (httpx's
own timeouts are per read, so a server that drips its body would never trip them), and the body
is read as a stream of at most `max_response_bytes`: a larger answer is refused, not read.
Every exception on the way (httpx's, the socket's, a body that does not decode) becomes a
`ProviderError` subclass. A 200 answer is decoded strictly: invalid bytes (or a lone surrogate in
its text) make it a `BadResponse`, never text patched with U+FFFD that would be validated and
cached as if the server had said it. An error page is only quoted, so it is decoded leniently.

A free-text request is streamed (server-sent events) when the `stream` setting allows it and
someone listens (storyengine.streaming): pieces are shown as they arrive, and the `Completion`
returned is the one the whole answer would be, under the same deadline, limit, redaction and
refusals (sse.py). A structured request streams only when someone reads its JSON as it grows
(pipeline/growing_json.py), a summary never; a stream request answered with one JSON body is
read as it.

Here: the request body, the HTTP exchange and its failures, the answer. Reading the body within
its limits is http_answer.py's, a stream sse.py's; the text and usage counts a server may send in
many shapes are chat_answer.py's; what an error page or a Retry-After header says,
server_messages.py's. The provider's model profile (`profile`: `standard` unless configured) is
read by a `Retrying` built around it alone; the router asks it as its route's profile says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from .. import config, streaming
from ..config import OpenAIProviderSettings
from ..errors import (
    AuthenticationError,
    BadResponse,
    EmptyOutput,
    ProviderError,
    ProviderHTTPError,
    ProviderRedirect,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
)
from ..types import Completion, CompletionRequest, Usage
from .base import estimate_tokens
from .chat_answer import are_parts, text_parts, tool_arguments, usage_of
from .http_answer import HTTPAnswer, ReadProgress, network_reason, read_body
from .profiles import profile_for
from .server_messages import body_excerpt, error_excerpt, excerpt, redactor
from .server_messages import parse_retry_after as parse_retry_after
from .sse import StreamedAnswer, is_event_stream, read_events

logger = logging.getLogger(__name__)

_TOOL_NAME_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_STRUCTURED_FIELDS = ("response_format", "tool_choice", "tools", "format")


class OpenAICompatProvider:
    """Chat completions over HTTP against any OpenAI-compatible server."""

    def __init__(
        self,
        name: str,
        settings: OpenAIProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.model = settings.model
        self.context_window = settings.context_window
        self.structured_mode: str = settings.structured_output
        self.base_url = settings.base_url.rstrip("/")
        self.profile = profile_for(settings)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(settings.max_parallel)
        self._usage_flagged = False
        self._streams_cut = False  # the server ended a stream before its answer: ask whole from then on
        self.streamed_answers = 0  # answers that came as a stream of events (`providers check` reads it)

    def __repr__(self) -> str:
        return (
            f"OpenAICompatProvider(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r}, "
            f"structured_output={self.structured_mode!r})"
        )

    # -- the Provider protocol --

    async def complete(self, request: CompletionRequest) -> Completion:
        streamed = self.streams(request)
        body = self.request_body(request, stream=streamed)
        timeout = self.settings.timeout or request.timeout
        started = time.perf_counter()
        async with self._slots:
            try:
                response = await self._post(body, timeout, streamed=streamed)
            except StreamInterrupted as exc:  # the same request read whole (then shown whole)
                self._stop_streaming(exc)
                response = await self._post(self.request_body(request), timeout, streamed=False)
        latency = time.perf_counter() - started
        try:
            if isinstance(response, StreamedAnswer):
                self.streamed_answers += 1
                return self._streamed_completion(response, request, latency)
            self._raise_for_status(response, structured=any(field in body for field in _STRUCTURED_FIELDS))
            completion = self._completion(response, request, latency)
            if streamed:  # asked for a stream, answered whole: shown whole
                streaming.delta(completion.text)
            return completion
        except ProviderError:
            raise
        except Exception as exc:  # a shape no branch foresaw: still an error of this provider
            raise BadResponse(
                f"{self.name}: the answer from {self.base_url} could not be read "
                f"({type(exc).__name__}: {self._redact(str(exc))})",
                provider=self.name,
            ) from None

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the wire format --

    def streams(self, request: CompletionRequest) -> bool:
        """Whether `request` is asked as a stream, as `stream` says (auto: a request someone listens
        to: a stage-1 draft, or a whole object whose list items are shown as they pass; on: every
        free-text request too; off: none), unless this server has cut a stream short."""
        if self.settings.stream == "off" or self._streams_cut:
            return False
        if streaming.wanted() and request.stage in ("freeform", "structuring"):
            return True  # not a summary made while a draft is watched
        return self.settings.stream == "on" and request.json_schema is None

    def _stop_streaming(self, cut: StreamInterrupted) -> None:
        """A server that ended a stream before its answer (measured: llama_cpp.server ends a
        streamed answer whenever another request waits, so concurrent scenes cut each other
        forever) is asked without streams from now on: what was shown of the cut answer is void,
        and the answer comes whole when it is done."""
        streaming.attempt_started()
        if not self._streams_cut:
            self._streams_cut = True
            logger.warning("%s; asking it without streaming from now on", self._redact(str(cut)))

    def request_body(self, request: CompletionRequest, *, stream: bool = False) -> dict[str, Any]:
        """The JSON body of a chat completion for `request`, in this provider's structured mode."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.json_schema is not None:
            body.update(self._structured_fields(request.json_schema, request.schema_name))
        return body

    def _structured_fields(self, schema: dict[str, Any], schema_name: str) -> dict[str, Any]:
        name = _TOOL_NAME_INVALID.sub("_", schema_name)[:64] or "output"
        mode = self.structured_mode
        if mode == "json_schema":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": True},
                }
            }
        if mode == "json_object_schema":
            return {"response_format": {"type": "json_object", "schema": schema}}
        if mode == "ollama_format":
            return {"format": schema}
        if mode == "tool_call":
            return {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": name,
                            "description": "Return the answer as structured data.",
                            "parameters": schema,
                        },
                    }
                ],
                "tool_choice": {"type": "function", "function": {"name": name}},
            }
        return {}

    def _headers(self) -> dict[str, str]:
        key = config.api_key(self.settings.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    # -- transport and failures --

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url + "/", transport=self._transport)
        return self._client

    async def _post(
        self, body: dict[str, Any], seconds: float, *, streamed: bool
    ) -> HTTPAnswer | StreamedAnswer:
        """POST the body and read the whole answer (`streamed`: a stream, if the server streams)
        within `seconds`, connect to last byte."""
        url = f"{self.base_url}/chat/completions"
        logger.debug("%s: POST %s (model %s)", self.name, url, self.model)
        progress = ReadProgress()
        try:
            async with asyncio.timeout(seconds):
                async with self._http().stream(
                    "POST", "chat/completions", json=body, headers=self._headers(),
                    timeout=httpx.Timeout(seconds),
                ) as response:  # fmt: skip
                    progress.answering = True
                    progress.declared = response.headers.get("Content-Length", "")
                    progress.encoding = response.headers.get("Content-Encoding", "")
                    if streamed and is_event_stream(response):
                        redact, hold = self._redactor()
                        return await read_events(
                            response, url, progress, limit=self.settings.max_response_bytes,
                            provider=self.name, redact=redact, hold=hold, refuse=self._refuse_lone_surrogates,
                        )  # fmt: skip
                    content = await read_body(
                        response, url, progress, limit=self.settings.max_response_bytes, provider=self.name
                    )
                    return HTTPAnswer(
                        status_code=response.status_code,
                        reason_phrase=response.reason_phrase,
                        headers=response.headers,
                        url=str(response.url),
                        content=content,
                        encoding=response.charset_encoding or "utf-8",
                    )
        except ProviderError:
            raise
        except (TimeoutError, httpx.TimeoutException):
            got = f"; {progress.received:,} bytes of it had arrived" if progress.received else ""
            raise ProviderTimeout(
                f"{self.name}: no complete answer from {url} within {seconds:g}s (the timeout bounds "
                f"the whole answer, connect to last byte{got}); check the server or raise the timeout",
                provider=self.name,
            ) from None
        except httpx.DecodingError as exc:
            raise BadResponse(
                f"{self.name}: the answer from {url} cannot be decoded ({self._redact(str(exc))}); "
                "its body does not match its Content-Encoding "
                f"({self._redact(progress.encoding) or 'none'})",
                provider=self.name,
            ) from None
        except httpx.TransportError as exc:
            reason = network_reason(exc)
            if progress.answering:  # the server had begun to answer: it is running, it hung up
                of = f" of {int(progress.declared):,}" if progress.declared.strip().isdigit() else ""
                raise ProviderUnavailable(
                    f"{self.name}: {self.base_url} closed the connection mid-answer, after "
                    f"{progress.received:,}{of} bytes ({self._redact(reason)}); the server or a proxy "
                    "in between cut the answer short: check the server's log for why",
                    provider=self.name,
                ) from None
            raise ProviderUnavailable(
                f"{self.name}: cannot reach {self.base_url} ({self._redact(reason)}); is the server running?",
                provider=self.name,
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            raise ProviderError(
                f"{self.name}: the request to {url} failed ({type(exc).__name__}: "
                f"{self._redact(str(exc))}); check base_url of this provider",
                provider=self.name,
                retryable=False,
            ) from None
        except Exception as exc:  # anything else from the HTTP stack is still this provider's failure
            raise ProviderUnavailable(
                f"{self.name}: the request to {url} failed unexpectedly ({type(exc).__name__}: "
                f"{self._redact(str(exc))})",
                provider=self.name,
            ) from None

    def _raise_for_status(self, response: HTTPAnswer, *, structured: bool) -> None:
        status = response.status_code
        if 300 <= status < 400:
            self._raise_redirect(response)
        if status < 400:
            return
        excerpt = error_excerpt(response, self._redact)
        where = f"{self.name}: {self.base_url} answered HTTP {status}"
        if status in (401, 403):
            env = self.settings.api_key_env
            if not env:
                hint = "set api_key_env of this provider to the environment variable that holds the key"
            elif config.api_key(env) is None:
                hint = f"the env var {env} is not set; set it to your API key"
            else:
                hint = f"check the env var {env}"
            raise AuthenticationError(
                f"{where} (API key missing or rejected): {hint}", provider=self.name, status=status
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            when = f"; retry after {retry_after:g}s" if retry_after is not None else ""
            raise RateLimited(
                f"{where} (rate limited{when}): {excerpt}", provider=self.name, retry_after=retry_after
            )
        hint = ""
        # llama_cpp.server answers an unsupported response_format with HTTP 500, others with 400/422.
        if structured and (status in (400, 422) or any(f in excerpt for f in _STRUCTURED_FIELDS)):
            hint = (
                f" (if the server does not support structured_output {self.structured_mode!r}, "
                "choose another mode in the config)"
            )
        raise ProviderHTTPError(f"{where}: {excerpt}{hint}", provider=self.name, status=status)

    def _raise_redirect(self, response: HTTPAnswer) -> None:
        location = response.headers.get("Location", "")
        target = (
            self._redact(str(httpx.URL(response.url).join(location))) if location else "nowhere (no Location)"
        )
        raise ProviderRedirect(
            f"{self.name}: {self.base_url} answered HTTP {response.status_code}, a redirect to {target}; "
            "redirects are not followed (they would carry the API key elsewhere): set base_url of this "
            "provider to the address it should use",
            provider=self.name,
            status=response.status_code,
            location=target,
        )

    def _redact(self, text: str) -> str:
        """`text` without this provider's key or any other secret value (storyengine.secrets)."""
        return self._redactor()[0](text)

    def _redactor(self) -> tuple[Callable[[str], str], int]:
        """`_redact` for the secrets of this moment, and what a stream holds back (server_messages)."""
        return redactor(config.api_key(self.settings.api_key_env), config.secret_values())

    # -- the answer --

    def _streamed_completion(
        self, answer: StreamedAnswer, request: CompletionRequest, latency: float
    ) -> Completion:
        """A stream read to its end, as the `Completion` the same answer read whole would be."""
        if not answer.text and answer.tool_call:
            self._refuse_tool_call(structured=False)
        self._refuse_lone_surrogates(answer.text)
        usage, estimated = self._usage(answer.usage, request, answer.text)
        return Completion(
            text=answer.text,
            finish_reason=answer.finish_reason or "unknown",
            usage=usage,
            usage_estimated=estimated,
            model=answer.model or self.model,
            provider=self.name,
            latency_s=latency,
            structured_mode="none",
        )

    def _completion(self, response: HTTPAnswer, request: CompletionRequest, latency: float) -> Completion:
        data = self._json_body(response)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BadResponse(
                f"{self.name}: the answer from {self.base_url} has no choices: "
                f"{excerpt(self._redact(response.text))}",
                provider=self.name,
            )
        choice = choices[0]
        raw_message = choice.get("message")
        message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
        text = self._redact(self._text_of(message, request))
        self._refuse_lone_surrogates(text)
        usage, estimated = self._usage(data.get("usage"), request, text)
        finish_reason = str(choice.get("finish_reason") or "unknown")
        if finish_reason == "tool_calls" and usage.completion_tokens >= request.max_tokens:
            # Some servers report a forced tool call as "tool_calls" even when cut off.
            finish_reason = "length"
        structured = self.structured_mode if request.json_schema is not None else "none"
        return Completion(
            text=text,
            finish_reason=finish_reason,
            usage=usage,
            usage_estimated=estimated,
            model=str(data.get("model") or self.model),
            provider=self.name,
            latency_s=latency,
            structured_mode=structured,
        )

    def _json_body(self, response: HTTPAnswer) -> dict[str, Any]:
        try:
            body = response.strict_text()
        except UnicodeDecodeError as exc:
            raise BadResponse(
                f"{self.name}: the answer from {self.base_url} is not valid {exc.encoding} text (byte "
                f"{exc.object[exc.start]:#04x} at offset {exc.start:,} of {len(response.content):,}); a "
                "corrupt answer is refused, not patched with replacement characters",
                provider=self.name,
            ) from None
        try:
            data = json.loads(body)
        except ValueError:
            shown = body_excerpt(response, self._redact) or f"an empty body (HTTP {response.status_code})"
            raise BadResponse(
                f"{self.name}: the answer from {self.base_url} is not JSON: {shown}",
                provider=self.name,
            ) from None
        if not isinstance(data, dict):
            raise BadResponse(
                f"{self.name}: the answer from {self.base_url} is not a JSON object: "
                f"{excerpt(self._redact(response.text))}",
                provider=self.name,
            )
        return data

    def _text_of(self, message: dict[str, Any], request: CompletionRequest) -> str:
        structured = request.json_schema is not None
        if self.structured_mode == "tool_call" and structured:
            arguments = tool_arguments(message)
            if arguments is not None:
                return arguments
        content = message.get("content")
        if content is None or content == "":
            if tool_arguments(message) is not None:
                self._refuse_tool_call(structured)
            return ""
        if isinstance(content, list) and are_parts(content):
            text = text_parts(content)
            if text is not None:
                return text
        elif isinstance(content, dict | list):
            # The JSON itself rather than its text (some servers parse a structured answer for
            # you): as JSON text it is checked like any other answer.
            return json.dumps(content, ensure_ascii=False)
        if not isinstance(content, str):
            raise BadResponse(
                f"{self.name}: the answer's message content is {type(content).__name__}, not text "
                "(nor a list of text parts)",
                provider=self.name,
            )
        return content

    def _refuse_tool_call(self, structured: bool) -> None:
        """An answer whose content is empty because the server returned it as a tool call."""
        if structured:
            said = (
                "its JSON came as a tool call (in tool_calls) instead; set structured_output: tool_call "
                f"for provider {self.name} in the config, and it is read from there"
            )
        else:
            said = (
                "its text came as a tool call (in tool_calls) although no tool was offered; turn off "
                "the server's tool-call parsing for this model"
            )
        raise EmptyOutput(
            f"{self.name}: the answer from {self.base_url} has no content: {said}",
            provider=self.name,
            retryable=False,  # the same request would come back the same way
        )

    def _refuse_lone_surrogates(self, text: str) -> None:
        """A text that is no Unicode (a lone surrogate, escaped as \\udXXX in the JSON) is refused:
        it is corrupt, and it could not even be written to the cache or a file."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadResponse(
                f"{self.name}: the answer from {self.base_url} holds a lone surrogate "
                f"(U+{ord(text[exc.start]):04X} at character {exc.start:,}), not text; a corrupt answer "
                "is refused, not patched",
                provider=self.name,
            ) from None

    def _usage(self, raw: Any, request: CompletionRequest, text: str) -> tuple[Usage, bool]:
        """The server's token counts, and whether any is estimated: a count that is missing or no
        count (NaN, Infinity, negative, fractional, not a number) is estimated instead, and the first
        such answer is logged."""
        usage, bad = usage_of(raw, request, text)
        fields = raw if isinstance(raw, dict) else {}
        estimated = bool(bad) or any(
            fields.get(name) is None for name in ("prompt_tokens", "completion_tokens")
        )
        if bad and not self._usage_flagged:
            self._usage_flagged = True
            logger.warning(
                "%s: the server's usage holds %s, not token counts; those counts are estimated "
                "(further answers like this are estimated without a warning)",
                self.name,
                ", ".join(bad),
            )
        return usage, estimated
