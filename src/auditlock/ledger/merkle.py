"""Merkle trees, hashed as RFC 9162 (Certificate Transparency v2.0) section 2.1.

    leaf hash  = SHA-256(0x00 || leaf bytes)                       (2.1.1)
    node hash  = SHA-256(0x01 || left || right)
    empty tree = SHA-256("")
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n

A ledger's leaves are its event lines (docs/FORMAT.md, "Lines"), so the leaf hash is the
event hash that the next line's `prev` commits to; lines.py defines it, once.

`Frontier` is the compact form a writer and a verifier keep while appending: the roots
of the perfect subtrees that make up the tree, largest first (one per set bit of the
size). Checkpoints publish it, so a verifier can start at any checkpoint and a writer
can resume without reading the leaves again.

Inclusion and consistency proofs follow 2.1.3 and 2.1.4 step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from auditlock.ledger.errors import ProofError
from auditlock.ledger.lines import event_hash

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()
# SHA-256 with the node prefix already absorbed (cheaper to copy than to prepend).
_NODE = _sha256(b"\x01")

hash_leaf = event_hash  # RFC 9162 2.1.1: the hash of one leaf


def hash_children(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: the hash of an interior node."""
    h = _NODE.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already hashed with hash_leaf)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    # Level by level, pairing left to right; an odd last node is promoted unchanged. This
    # is the same tree as the recursive definition (the last subtree is the short one).
    while len(level) > 1:
        paired = _pairs(level[: len(level) & ~1])
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class Frontier:
    """Compact Merkle state: perfect-subtree roots for `size` leaves, largest first."""

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise ValueError(f"a frontier of {size} leaves has {bin(size).count('1')} nodes")
        self.size = size
        self.nodes = list(nodes)

    def append(self, leaf_hash: bytes) -> None:
        node = leaf_hash
        size = self.size
        nodes = self.nodes
        while size & 1:
            node = hash_children(nodes.pop(), node)
            size >>= 1
        nodes.append(node)
        self.size += 1

    def extend(
        self,
        leaf_hashes: Sequence[bytes],
        pairs: Callable[[Sequence[bytes]], list[bytes]] | None = None,
    ) -> None:
        """Append many leaves, hashing level by level (much faster than one by one).
        `pairs` hashes the parents of a level (default: hashlib's, as the rest of this
        module; the writer passes build_hash.node_pairs)."""
        if len(leaf_hashes) < 4:
            for leaf in leaf_hashes:
                self.append(leaf)
            return
        nodes = self.nodes
        position = self.size  # index, on the current level, of the first node in `level`
        level = list(leaf_hashes)
        finished: list[bytes] = []  # new frontier nodes, smallest subtree first
        pair_up = pairs or _pairs
        while level:
            if position & 1:  # a left sibling waits in the frontier
                level.insert(0, nodes.pop())
                position -= 1
            if len(level) & 1:
                finished.append(level.pop())
            level = pair_up(level)
            position >>= 1
        nodes.extend(reversed(finished))
        self.size += len(leaf_hashes)

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        node = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            node = hash_children(left, node)
        return node

    def copy(self) -> Frontier:
        return Frontier(self.size, self.nodes)


def _pairs(level: Sequence[bytes]) -> list[bytes]:
    """The parents of an even-length level, left to right."""
    node = _NODE
    out: list[bytes] = []
    add = out.append
    pairs = iter(level)
    for left, right in zip(pairs, pairs, strict=True):
        h = node.copy()
        h.update(left)
        h.update(right)
        add(h.digest())
    return out


# -- inclusion (RFC 9162 2.1.3) -------------------------------------------------------------


def inclusion_path(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of 2.1.3.1 for leaf `index` of the tree over `leaf_hashes`."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ProofError(f"leaf index {index} is outside a tree of size {n}")
    return _path(index, leaf_hashes, 0, n)


def inclusion_paths(indices: Iterable[int], leaf_hashes: Sequence[bytes]) -> dict[int, list[bytes]]:
    """PATH(m, D[n]) of 2.1.3.1 for many leaves of one tree, building the tree once.

    Built level by level with an odd last node promoted unchanged (the tree of 2.1.1, as
    in `root_of`), a leaf's path is the sibling of its node on each level, bottom up,
    skipping the levels where its node is the promoted one: the order of 2.1.3.1."""
    n = len(leaf_hashes)
    wanted = sorted(set(indices))
    for index in wanted:
        if not 0 <= index < n:
            raise ProofError(f"leaf index {index} is outside a tree of size {n}")
    levels = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        paired = [hash_children(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        levels.append(paired)
    paths: dict[int, list[bytes]] = {}
    for index in wanted:
        path, position = [], index
        for level in levels[:-1]:
            sibling = position ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            position >>= 1
        paths[index] = path
    return paths


def _path(m: int, leaves: Sequence[bytes], lo: int, hi: int) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*_path(m, leaves, lo, lo + k), root_of(leaves[lo + k : hi])]
    return [*_path(m - k, leaves, lo + k, hi), root_of(leaves[lo : lo + k])]


def verify_inclusion(
    index: int, tree_size: int, leaf_hash: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """2.1.3.2: raise ProofError unless `path` proves leaf `index` in the tree of `root`."""
    if not 0 <= index < tree_size:
        raise ProofError(f"leaf index {index} is outside a tree of size {tree_size}")
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:
            raise ProofError("inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion path is shorter than the tree is deep")
    if r != root:
        raise ProofError("inclusion path leads to a different root than the checkpoint's")


# -- consistency (RFC 9162 2.1.4) -----------------------------------------------------------


def consistency_path(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of 2.1.4.1: the old tree (first old_size leaves) is a prefix."""
    n = len(leaf_hashes)
    if not 0 < old_size <= n:
        raise ProofError(f"no consistency proof from size {old_size} to size {n}")
    if old_size == n:
        return []
    return _subproof(old_size, leaf_hashes, 0, n, True)


def _subproof(m: int, leaves: Sequence[bytes], lo: int, hi: int, whole: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if whole else [root_of(leaves[lo:hi])]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves, lo, lo + k, whole), root_of(leaves[lo + k : hi])]
    return [*_subproof(m - k, leaves, lo + k, hi, False), root_of(leaves[lo : lo + k])]


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> None:
    """2.1.4.2: raise ProofError unless `path` proves the old tree is a prefix of the new."""
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency between sizes {old_size} and {new_size}")
    if old_size == new_size:
        if path:
            raise ProofError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError("equal tree sizes with different roots")
        return
    proof = list(path)
    if old_size & (old_size - 1) == 0:  # exact power of two: the old root starts the walk
        proof.insert(0, old_root)
    if not proof:
        raise ProofError("consistency proof is empty")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    if fr != old_root:
        raise ProofError("consistency proof does not reproduce the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not reproduce the new root")
