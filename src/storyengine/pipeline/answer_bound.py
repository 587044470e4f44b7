"""How long an answer can be: the most characters, and tokens, a JSON value of a schema takes.

`answer_token_bound` gives a structuring call its `max_tokens` from the schema it is asked with
(a part's, pipeline/structure_parts.py): room for the longest valid answer, so a runaway stops
there and a valid answer is never cut off.
"""

from __future__ import annotations

import json
from typing import Any

# Between JSON tokens llama.cpp's schema grammar allows at most one space (`space ::= " "?`);
# a server's own JSON mode may indent, so each separator is given room for a few characters.
_SEPARATOR = 3


def json_char_bound(schema: dict[str, Any]) -> int | None:
    """The most characters a JSON value valid for `schema` can take (None when unbounded).

    Strings count `maxLength` plus their quotes (an escape counts as one character, as
    maxLength does), enums their longest member, integers with bounds their widest value,
    arrays `maxItems` items, objects every property with its key.
    """
    if "enum" in schema:
        return max(len(json.dumps(value, ensure_ascii=False)) for value in schema["enum"])
    if "const" in schema:
        return len(json.dumps(schema["const"], ensure_ascii=False))
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        bounds = [json_char_bound(branch) for branch in branches]
        return None if None in bounds else max(b for b in bounds if b is not None)
    kind = schema.get("type")
    if kind == "string":
        return schema["maxLength"] + 2 if "maxLength" in schema else None
    if kind in ("integer", "number"):
        if "minimum" not in schema or "maximum" not in schema or kind == "number":
            return None
        return max(len(str(schema["minimum"])), len(str(schema["maximum"])))
    if kind == "boolean":
        return len("false")
    if kind == "null":
        return len("null")
    if kind == "array":
        item = json_char_bound(schema.get("items", {}))
        if item is None or "maxItems" not in schema:
            return None
        return 2 + _SEPARATOR + schema["maxItems"] * (item + _SEPARATOR)
    if kind == "object":
        total = 2 + _SEPARATOR
        for key, value in schema.get("properties", {}).items():
            bound = json_char_bound(value)
            if bound is None:
                return None
            total += len(json.dumps(key, ensure_ascii=False)) + 1 + bound + 2 * _SEPARATOR
        return total
    return None


# Tokens per answer: a byte-level BPE token holds at least one character (a letter outside ASCII
# may take two byte tokens; the margin and the retry on a cut-off cover that), plus the end token.
_TOKEN_MARGIN = 8


def answer_token_bound(schema: dict[str, Any], fallback: int) -> int:
    """`max_tokens` for an answer to `schema`: room for the longest valid JSON, never less.

    An answer needs no more, so a runaway stops there; and a valid answer is never cut off
    (which would cost a retry with a doubled budget). `fallback` when the schema is unbounded.
    """
    chars = json_char_bound(schema)
    return fallback if chars is None else chars + _TOKEN_MARGIN
