"""Stopping runaways while an embedded model writes (profile `stops_loops`, providers/profiles.py).

A small model's free writing often falls into a loop and repeats it until max_tokens. While a
free-text answer (no schema, not a structuring call) of a model whose profile stops loops is
generated, each sampled token is followed (`LoopWatch`): at the end of every sentence, and every
`LOOP_CHECK_EVERY` tokens, the text so far is checked with `text.loops.loop_start`; at the first
loop the generation ends there (llama-cpp-python is handed an end-of-generation token, so its own
bookkeeping, usage and KV state stay consistent; see `llama_model._prefix_reusing`), the answer's
looping tail is cut (`stop_at_loop`), and its finish_reason is "loop" (`LOOP_STOP`). The tokens a
loop would have run on for are never generated; usage counts the tokens that were.

`TextFeed` follows the same tokens for a listener (storyengine.streaming): the text of each token as
it is sampled, whole characters only, never past a stop sequence nor the part of the text that may
yet turn out to begin one. What is shown is what was generated; the answer kept may be shorter (a
loop cut off): the provider then shows nothing more.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Any

from ..text.loops import before_loop, loop_start
from .base import LOOP_STOP

LOOP_CHECK_EVERY = 16  # tokens between loop checks when no sentence ends (a loop without full stops)
_SENTENCE_BREAK = (b".", b"!", b"?", b"\n", "…".encode())


class LoopWatch:
    """Follows a free-text answer token by token and says when it has fallen into a loop.

    `stop_after(token)` is True at the first token after which `text.loops.loop_start` finds a loop
    in the answer so far (checked when a token ends a sentence or a line, and every
    `LOOP_CHECK_EVERY` tokens); `stopped` then stays True.
    """

    def __init__(self, detokenize: Any) -> None:
        self.detokenize = detokenize  # llama.detokenize: token ids -> bytes
        self.tokens: list[int] = []
        self.stopped = False

    def stop_after(self, token: int) -> bool:
        self.tokens.append(token)
        piece = bytes(self.detokenize([token]))
        if len(self.tokens) % LOOP_CHECK_EVERY and not any(b in piece for b in _SENTENCE_BREAK):
            return False
        text = bytes(self.detokenize(self.tokens)).decode("utf-8", errors="ignore")
        self.stopped = loop_start(text) is not None
        return self.stopped


def stop_at_loop(answer: dict[str, Any]) -> dict[str, Any]:
    """A chat answer whose generation a `LoopWatch` stopped: its loop cut off, finish_reason "loop"."""
    choice = answer["choices"][0]
    text = (choice.get("message") or {}).get("content") or ""
    cut = before_loop(text)
    if cut != text:
        choice["message"]["content"] = cut.rstrip()
    choice["finish_reason"] = LOOP_STOP
    return answer


class TextFeed:
    """Sends the text of an answer on as its tokens are sampled (`token(id)`, from the generating
    thread), through `emit`: whole characters only, and not beyond the first of `stop` (the text
    llama-cpp-python would cut there), holding back an end that may be the start of one. `shown` is
    all that was sent."""

    def __init__(self, detokenize: Any, emit: Callable[[str], None], stop: tuple[str, ...] = ()) -> None:
        self.detokenize = detokenize  # llama.detokenize: token ids -> bytes
        self.emit = emit
        self.stop = tuple(s for s in stop if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._text = ""
        self.shown = ""
        self.ended = False  # a stop sequence was written: nothing after it is shown

    def token(self, token: int) -> None:
        if self.ended:
            return
        self._text += self._decoder.decode(bytes(self.detokenize([token])))
        upto = len(self._text)
        for stop in self.stop:
            at = self._text.find(stop)
            if at >= 0:
                upto, self.ended = min(upto, at), True
        if not self.ended:
            upto -= max((n for stop in self.stop for n in range(len(stop), 0, -1)
                         if self._text.endswith(stop[:n])), default=0)  # fmt: skip
        if upto > len(self.shown):
            piece = self._text[len(self.shown) : upto]
            self.shown += piece
            self.emit(piece)
