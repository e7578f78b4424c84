"""Many inclusion paths from one tree build equal RFC 9162's PATH(m, D[n]) one by one."""

from __future__ import annotations

import pytest

from auditlock.ledger.errors import ProofError
from auditlock.ledger.merkle import (
    hash_leaf,
    inclusion_path,
    inclusion_paths,
    root_of,
    verify_inclusion,
)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 31, 64, 100])
def test_paths_of_every_leaf_match_the_recursive_definition(size: int) -> None:
    leaves = [hash_leaf(i.to_bytes(4, "big")) for i in range(size)]
    paths = inclusion_paths(range(size), leaves)
    root = root_of(leaves)
    for m in range(size):
        assert paths[m] == inclusion_path(m, leaves)
        verify_inclusion(m, size, leaves[m], paths[m], root)


def test_an_index_outside_the_tree_is_refused() -> None:
    with pytest.raises(ProofError):
        inclusion_paths([3], [hash_leaf(b"a")] * 3)
