"""Canonical JSON and the hashes built on it (cache keys, prompt hashes in the run log)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .types import Message


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, non-ASCII kept as is: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def prompt_hash(messages: Sequence[Message]) -> str:
    """sha256 of the canonical JSON of the messages (role, content), hashed as the cache key does."""
    return sha256_hex(canonical_json([m.model_dump() for m in messages]))
