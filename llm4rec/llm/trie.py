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


@dataclass
class ItemTrie:
    """Nodes are ints; node 0 is the root. `children[node]` maps token -> child node."""

    children: list[dict[int, int]] = field(default_factory=lambda: [{}])
    item_at: dict[int, str] = field(default_factory=dict)  # leaf node -> item id
    n_below: list[int] = field(default_factory=lambda: [0])  # items in each node's subtree
    paths: dict[str, list[int]] = field(
        default_factory=dict
    )  # item id -> nodes from root's child to leaf

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

    def is_item(self, node: int) -> bool:
        return node in self.item_at

    @property
    def depth(self) -> int:
        return max((len(p) for p in self.paths.values()), default=0)
