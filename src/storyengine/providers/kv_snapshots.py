"""Reusing what the model has read: KV snapshots of recent sequences (embedded models).

llama-cpp-python keeps the KV state of the last evaluation and, when the next prompt starts with
the same tokens, evaluates only the rest (`Llama.generate`: longest common prefix, then
`kv_cache_seq_rm` of the tail). Calls that interleave (two scenes structured at once) would each
throw away the other's prefix, so after every call the KV cells of the sequence are kept as a
snapshot (`PrefixSnapshots`: the KV cells only, not the logits, within a byte budget), and before
a prompt is evaluated the snapshot that shares the longest prefix with it is put back when it
beats what is loaded. `llama_model.LoadedModel.stats` counts the prompt tokens actually
evaluated, so the saving is measured, not assumed.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

# Snapshots kept per model: the KV cells of recent sequences (SmolLM2-135M: about 23 kB a token).
PREFIX_SNAPSHOT_BYTES = 256 * 2**20
PREFIX_SNAPSHOT_GAIN = 16  # restore only when it saves at least this many prompt tokens


def common_prefix(a: Any, b: Any) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class _Snapshot:
    tokens: tuple[int, ...]
    data: Any  # a ctypes byte array holding llama_state_seq_get_data of sequence 0
    size: int


class PrefixSnapshots:
    """KV snapshots of recent sequences, so interleaved calls keep their shared prefixes.

    `save` after a call keeps the sequence's KV cells (dropping snapshots it extends, and the
    oldest beyond the byte budget); `restore` before a prompt is evaluated loads the snapshot
    sharing the longest prefix with the prompt, when that beats the KV already loaded.
    llama-cpp-python's own prefix match then evaluates only the rest.
    """

    def __init__(self, capacity_bytes: int = PREFIX_SNAPSHOT_BYTES) -> None:
        self.capacity_bytes = capacity_bytes
        self.snapshots: list[_Snapshot] = []  # oldest first
        self.restored = 0
        self.restored_tokens = 0

    def save(self, llama: Any) -> None:
        from llama_cpp import llama_cpp as lib

        tokens = tuple(int(t) for t in llama.input_ids[: llama.n_tokens])
        if not tokens:
            return
        size = int(lib.llama_state_seq_get_size(llama.ctx, 0))
        if size <= 0 or size > self.capacity_bytes:
            return
        data = (ctypes.c_uint8 * size)()
        written = int(lib.llama_state_seq_get_data(llama.ctx, data, size, 0))
        if written <= 0:
            return
        kept = [s for s in self.snapshots if common_prefix(s.tokens, tokens) < len(s.tokens)]
        kept.append(_Snapshot(tokens, data, written))
        while sum(s.size for s in kept) > self.capacity_bytes:
            kept.pop(0)
        self.snapshots = kept

    def restore(self, llama: Any, prompt: list[int]) -> int:
        """Load the best snapshot for `prompt` if it beats the loaded KV; the tokens it saves."""
        from llama_cpp import llama_cpp as lib

        loaded = common_prefix(llama.input_ids[: llama.n_tokens], prompt)
        best, shared = None, loaded
        for snapshot in self.snapshots:
            n = common_prefix(snapshot.tokens, prompt)
            if n > shared:
                best, shared = snapshot, n
        if best is None or shared - loaded < PREFIX_SNAPSHOT_GAIN:
            return 0
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        if int(lib.llama_state_seq_set_data(llama.ctx, best.data, best.size, 0)) == 0:
            llama._ctx.kv_cache_seq_rm(-1, 0, -1)
            llama.n_tokens = 0
            return 0
        llama.input_ids[: len(best.tokens)] = best.tokens
        llama.n_tokens = len(best.tokens)
        llama._requires_eval = True
        self.snapshots.remove(best)
        self.snapshots.append(best)  # most recently used last
        self.restored += 1
        self.restored_tokens += shared - loaded
        return shared - loaded
