"""Mutated messages for property tests: real messages with a few bytes cut, replaced or
inserted, the inputs a parser most often meets when a device or an interface misbehaves."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st


def mutated(
    seeds: Sequence[bytes],
    tokens: Sequence[bytes],
    *,
    max_cut: int = 8,
    max_edits: int = 6,
) -> st.SearchStrategy[bytes]:
    """One of ``seeds`` after 1..``max_edits`` edits, each cutting up to ``max_cut`` bytes at a
    position and putting in one of ``tokens`` (delimiters, segment names) or a few random bytes."""
    longest = max(len(s) for s in seeds)
    edit = st.tuples(
        st.integers(0, longest),
        st.integers(0, max_cut),
        st.sampled_from(list(tokens)) | st.binary(max_size=max_cut),
    )

    def mutate(seed: int, edits: list[tuple[int, int, bytes]]) -> bytes:
        data = bytearray(seeds[seed % len(seeds)])
        for pos, cut, insert in edits:
            at = pos % (len(data) + 1)
            data[at : at + cut] = insert
        return bytes(data)

    return st.builds(mutate, st.integers(0, 100), st.lists(edit, min_size=1, max_size=max_edits))
