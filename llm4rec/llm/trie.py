"""A prefix trie over the token sequences of every catalogue item's identifier.

Constrained decoding walks it: from a node, only its children's tokens may be emitted, and
a node that ends an identifier (its terminator token) is a complete item. Per-user
exclusion (the user's history) is applied by counting: a child stays allowed only while
some non-excluded item lies below it, so a beam can never end on a history item and K
distinct valid items are always reachable while K <= |catalogue| - |history|.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ItemTrie:
    """Nodes are ints; node 0 is the root. `children[node]` maps token -> child node."""

    children: list[dict[int, int]] = field(default_factory=lambda: [{}])
    item_at: dict[int, str] = field(default_factory=dict)  # leaf node -> item id
    n_below: list[int] = field(default_factory=lambda: [0])  # items in each node's subtree
    # item id -> nodes from root's child to leaf
    paths: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def build(cls, sequences: dict[str, Sequence[int]]) -> ItemTrie:
        """`sequences`: item id -> token ids (terminator included: no id is a prefix of another)."""
        trie = cls()
        for item, tokens in sequences.items():
            if not tokens:
                raise ValueError(f"item '{item}' has an empty token sequence")
            node, path = 0, []
            trie.n_below[0] += 1
            for token in tokens:
                if node in trie.item_at:  # an earlier item ends inside this one's path
                    raise ValueError(
                        f"item '{item}': its token sequence collides with item "
                        f"'{trie.item_at[node]}' (identifiers must be unique and end with a "
                        "terminator token)"
                    )
                child = trie.children[node].get(token)
                if child is None:
                    child = len(trie.children)
                    trie.children[node][token] = child
                    trie.children.append({})
                    trie.n_below.append(0)
                node = child
                trie.n_below[node] += 1
                path.append(node)
            if node in trie.item_at or trie.children[node]:
                raise ValueError(
                    f"item '{item}': its token sequence collides with item "
                    f"'{trie.item_at.get(node, '?')}' (identifiers must be unique and end with a "
                    "terminator token)"
                )
            trie.item_at[node] = item
            trie.paths[item] = path
        return trie

    def excluded_counts(self, items: Iterable[str]) -> dict[int, int]:
        """{node: number of excluded items below it} for one user's history."""
        counts: dict[int, int] = {}
        for item in set(items):
            for node in self.paths.get(item, ()):
                counts[node] = counts.get(node, 0) + 1
        return counts

    def only_excluded(self, node: int, excluded: dict[int, int]) -> bool:
        """Whether every item below `node` is excluded (a beam there could only end on history)."""
        return self.n_below[node] <= excluded.get(node, 0)

    def edges(self) -> TrieEdges:
        """The trie as arrays (built once, on first use; the trie does not change after `build`)."""
        if getattr(self, "_edges", None) is None or self._edges.nodes != len(self.children):
            start = np.zeros(len(self.children) + 1, dtype=np.int64)
            start[1:] = np.cumsum([len(c) for c in self.children])
            is_item = np.zeros(len(self.children), dtype=bool)
            is_item[list(self.item_at)] = True
            self._edges = TrieEdges(
                len(self.children),
                start,
                np.array([t for c in self.children for t in c], dtype=np.int64),
                np.array([n for c in self.children for n in c.values()], dtype=np.int64),
                is_item,
            )
        return self._edges

    def blocked_keys(self, histories: Sequence[Iterable[str]]) -> np.ndarray:
        """Sorted `user * nodes + node` keys of the nodes every item below which is in that user's
        history (`only_excluded`), for the users `histories` lists in order."""
        nodes = len(self.children)
        keys = [
            user * nodes + node
            for user, items in enumerate(histories)
            for node, count in self.excluded_counts(items).items()
            if self.n_below[node] <= count
        ]
        return np.array(sorted(keys), dtype=np.int64)

    def is_item(self, node: int) -> bool:
        return node in self.item_at

    @property
    def depth(self) -> int:
        return max((len(p) for p in self.paths.values()), default=0)


@dataclass(frozen=True)
class TrieEdges:
    """An `ItemTrie` as arrays: node n's children are edges start[n]:start[n + 1] (in the trie's
    order), each a `token` leading to a `child` node; `is_item[node]` where an identifier ends."""

    nodes: int
    start: np.ndarray
    token: np.ndarray
    child: np.ndarray
    is_item: np.ndarray
