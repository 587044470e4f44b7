"""config.yaml + environment -> typed settings. The only module that reads the environment."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from platformdirs import user_cache_dir, user_data_dir, user_log_dir
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .prompts import step_names
from .providers.profiles import ProfileName, profile_name_for
from .secrets import register_secret_env, secret_values_in

WEB_TOKEN_ENV = "STORYENGINE_WEB_TOKEN"

COMPONENTS = (*step_names(), "summarize")  # every step with templates (pipeline/steps/), and summaries
CONFIG_ENV = "STORYENGINE_CONFIG"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageDefaults(_Strict):
    temperature: float = Field(ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    max_tokens: int = Field(ge=1)
    timeout: float = Field(default=180.0, gt=0.0)


class Defaults(_Strict):
    freeform: StageDefaults = StageDefaults(temperature=0.8, top_p=0.95, max_tokens=400)
    structuring: StageDefaults = StageDefaults(temperature=0.0, seed=0, max_tokens=600)


Route = str | list[str]


class Routes(BaseModel):
    """The provider (or fallback chain) of each component; a step with no field of its own here
    may be routed under its name too, else it takes the plot's route, as the bible does."""

    model_config = ConfigDict(extra="allow")

    plot: Route = "embedded"
    bible: Route | None = None  # the story bible; default: the plot's route
    scene: Route = "embedded"
    dialogue: Route = "embedded"
    evaluation: Route = "embedded"
    enhancement: Route = "embedded"
    summarize: Route = "embedded"

    @model_validator(mode="after")
    def _extra_routes_name_steps(self) -> Routes:
        for name, route in (self.model_extra or {}).items():
            if name not in COMPONENTS:
                raise ValueError(
                    f"there is no component {name!r} to route (components: {', '.join(COMPONENTS)})"
                )
            if not (
                isinstance(route, str) or (isinstance(route, list) and all(isinstance(r, str) for r in route))
            ):
                raise ValueError(f"the route of {name} is a provider name or a list of them, not {route!r}")
        return self

    def chain(self, component: str) -> list[str]:
        route = getattr(self, component, None)
        if route is None:  # an optional route not given: the plot's
            route = self.plot
        return [route] if isinstance(route, str) else list(route)


class Concurrency(_Strict):
    scenes: int = Field(default=2, ge=1, le=64)


class Narrative(_Strict):
    defaults: Defaults = Defaults()
    providers: Routes = Routes()
    concurrency: Concurrency = Concurrency()
    # Stage-1 scene drafts drawn per scene, the best kept by a score computed by code
    # (drafts.draft_score). None: the scene route's profile decides (providers/profiles.py).
    scene_drafts: int | None = Field(default=None, ge=1, le=8)


class StructuringSettings(_Strict):
    strict: bool = True
    # How a whole-object structuring request is laid out: "next_turn" continues the draft's own
    # conversation (its messages, the draft as the answer, then the JSON asked for), so a prompt
    # cache or the embedded KV reads the shared prefix once; "fresh" sends a prompt of its own with
    # the draft inside; "auto" takes the model profile's (providers/profiles.py).
    layout: Literal["auto", "next_turn", "fresh"] = "auto"


class RetrySettings(_Strict):
    attempts: int = Field(default=3, ge=1, le=10)
    backoff_initial: float = Field(default=0.5, ge=0.0)
    backoff_max: float = Field(default=20.0, ge=0.0)
    # The circuit breaker (routing/breaker.py): after this many calls in a row that a provider
    # failed (connection, timeout, 5xx, garbage; not an invalid answer), it is skipped for
    # `breaker_cooldown` seconds, then one call probes it.
    breaker_failures: int = Field(default=3, ge=1, le=1000)
    breaker_cooldown: float = Field(default=60.0, gt=0.0)


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class CacheSettings(_Strict):
    enabled: bool = True
    # Where answers persist: one SQLite file (`path`), or a Redis server (`url`) that several
    # processes or machines share (`pip install 'storyengine[redis]'`).
    backend: Literal["sqlite", "redis"] = "sqlite"
    url: str | None = None
    path: Path | None = None
    ttl_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    memory_entries: int = Field(default=512, ge=0)
    cache_creative_with_seed_only: bool = True
    legacy_keys: bool = True

    @model_validator(mode="after")
    def _url_fits_backend(self) -> CacheSettings:
        if self.url is None:
            return self
        if self.backend != "redis":
            raise ValueError("cache.url is only used with cache.backend: redis")
        parsed = urlsplit(self.url)
        if parsed.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"cache.url {self.url!r} is not a Redis URL; write redis://HOST:PORT/DB "
                "(or rediss:// for TLS, unix:///path/to/redis.sock)"
            )
        if parsed.scheme != "unix" and not parsed.hostname:
            raise ValueError(f"cache.url {self.url!r} names no host; write redis://HOST:PORT/DB")
        try:
            parsed.port  # noqa: B018  (raises for a port that is not a number)
        except ValueError:
            raise ValueError(f"cache.url {self.url!r} has a port that is not a number") from None
        db = parsed.path.strip("/")
        if parsed.scheme != "unix" and db and not db.isdigit():
            raise ValueError(f"cache.url {self.url!r}: the database after the port must be a number")
        return self

    @property
    def redis_url(self) -> str:
        return self.url or DEFAULT_REDIS_URL


class LoggingSettings(_Strict):
    dir: Path | None = None
    runlog: Path | None = None
    invalid_json_max_files: int = Field(default=200, ge=1)
    invalid_json_max_bytes: int = Field(default=5_000_000, ge=1024)
    # Also send every call as an OpenTelemetry span (GenAI conventions) to the tracer provider the
    # application configured; needs the `otel` extra (opentelemetry-sdk).
    opentelemetry: bool = False


class EmbeddedProviderSettings(_Strict):
    type: Literal["embedded"]
    model_path: Path | None = None
    context_window: int = Field(default=2048, ge=256)
    threads: int | None = Field(default=None, ge=1)
    repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)  # tiny models loop without it
    # How the model is asked; unset: providers/profiles.py decides (tiny for the packaged SmolLM2 only).
    profile: Literal["tiny", "standard"] | None = None

    def profile_name(self) -> ProfileName:
        """The profile this entry gets (decided by providers/profiles.py, not here)."""
        return profile_name_for(self)


class OpenAIProviderSettings(_Strict):
    type: Literal["openai"]
    base_url: str
    model: str
    api_key_env: str | None = None
    structured_output: Literal["json_schema", "json_object_schema", "ollama_format", "tool_call", "none"] = (
        "json_schema"
    )
    context_window: int = Field(default=8192, ge=256)
    timeout: float | None = Field(default=None, gt=0)
    max_parallel: int = Field(default=4, ge=1, le=256)
    # How the model is asked; unset: providers/profiles.py decides (standard for every server).
    profile: Literal["tiny", "standard"] | None = None

    def profile_name(self) -> ProfileName:
        """The profile this entry gets (decided by providers/profiles.py, not here)."""
        return profile_name_for(self)

    # A larger response body is refused (and not read further) instead of filling memory.
    max_response_bytes: int = Field(default=8_000_000, gt=0)
    # Answers read as server-sent events, shown as they are written: auto streams a free-text draft
    # (stage 1) when someone listens to it (a run's viewer); on streams every free-text request; off
    # never. A structured request streams only to someone who reads its JSON as it grows (a run's
    # viewer, pipeline/growing_json.py); a summary never. A server that answers a stream request with
    # plain JSON is read as one answer.
    stream: Literal["auto", "on", "off"] = "auto"

    @model_validator(mode="after")
    def _register_key_env(self) -> OpenAIProviderSettings:
        register_secret_env(self.api_key_env)  # its value is scrubbed wherever text is written
        return self


ProviderSettings = Annotated[EmbeddedProviderSettings | OpenAIProviderSettings, Field(discriminator="type")]


def _default_providers() -> dict[str, EmbeddedProviderSettings | OpenAIProviderSettings]:
    return {"embedded": EmbeddedProviderSettings(type="embedded")}


class WebSettings(_Strict):
    # Request bodies larger than this are refused with HTTP 413 before they are read whole.
    max_request_bytes: int = Field(default=1_000_000, gt=0)


class Settings(_Strict):
    narrative: Narrative = Narrative()
    structuring: StructuringSettings = StructuringSettings()
    retry: RetrySettings = RetrySettings()
    cache: CacheSettings = CacheSettings()
    logging: LoggingSettings = LoggingSettings()
    web: WebSettings = WebSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=_default_providers)
    source: str = Field(default="<defaults>", exclude=True)

    @model_validator(mode="after")
    def _routes_name_defined_providers(self) -> Settings:
        for component in COMPONENTS:
            for name in self.narrative.providers.chain(component):
                if name not in self.providers:
                    defined = ", ".join(sorted(self.providers)) or "none"
                    raise ValueError(
                        f"narrative.providers.{component} names provider {name!r}, which is not defined "
                        f"under providers: (defined: {defined})"
                    )
        return self

    # -- derived paths (XDG unless configured) --
    @property
    def log_dir(self) -> Path:
        return self.logging.dir or Path(user_log_dir("storyengine", appauthor=False))

    @property
    def runlog_path(self) -> Path:
        return self.logging.runlog or Path(user_data_dir("storyengine", appauthor=False)) / "runs.sqlite3"

    @property
    def cache_path(self) -> Path:
        return self.cache.path or Path(user_cache_dir("storyengine", appauthor=False)) / "cache.sqlite3"

    def with_route(self, provider: str) -> Settings:
        """A copy that routes every component to `provider` (the CLI's --provider)."""
        if provider not in self.providers:
            raise ConfigError(
                f"--provider {provider!r} is not defined in {self.source} "
                f"(defined: {', '.join(sorted(self.providers))})"
            )
        routes = Routes(**{c: provider for c in COMPONENTS})
        narrative = self.narrative.model_copy(update={"providers": routes})
        return self.model_copy(update={"narrative": narrative})


def default_config_text() -> str:
    return resources.files("storyengine").joinpath("default_config.yaml").read_text(encoding="utf-8")


def load_settings(path: str | Path | None = None) -> Settings:
    """Load settings from `path`, else $STORYENGINE_CONFIG, else the packaged default."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    if path is None:
        return parse_settings(default_config_text(), source="the packaged default config")
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # bad input, not a bug: say where, and what to do
        raise ConfigError(
            f"config file {file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        ) from None
    return parse_settings(text, source=str(file))


def parse_settings(text: str, *, source: str = "<string>") -> Settings:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping at the top level, not {type(data).__name__}")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    return settings.model_copy(update={"source": source})


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
        # A discriminated union puts the tag in the location: providers.x.openai.base_url
        loc = loc.replace(".embedded.", ".").replace(".openai.", ".")
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {loc!r}")
        elif loc:
            problems.append(f"{loc}: {err['msg']}")
        else:
            problems.append(err["msg"].removeprefix("Value error, "))
    return f"invalid config in {source}: " + "; ".join(problems)


def api_key(env_name: str | None) -> str | None:
    """Read an API key from the environment variable the config names. Never logged."""
    if not env_name:
        return None
    return os.environ.get(env_name) or None


def secret_values() -> list[str]:
    """The values to scrub from anything written: of every configured `api_key_env` and of the
    variables named *_KEY, *_TOKEN or *_SECRET (see storyengine.secrets)."""
    return secret_values_in(os.environ)


def web_token() -> str | None:
    """The web app's access token from $STORYENGINE_WEB_TOKEN, if set."""
    return os.environ.get(WEB_TOKEN_ENV, "").strip() or None
