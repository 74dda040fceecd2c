"""Catalogue identifiers and the prefix trie used by constrained decoding."""

import pandas as pd
import pytest

from llm4rec.llm.identifiers import item_identifiers, item_text
from llm4rec.llm.trie import ItemTrie

END = 0  # terminator token


def test_identifier_uses_only_real_years():
    assert item_text("Toy Story", "1995") == "Toy Story (1995)"
    assert item_text("Strange Title", "unknown") == "Strange Title"
    assert item_text(" Heat ", "") == "Heat"


def test_colliding_identifiers_get_deterministic_suffixes():
    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4"],
            "title": ["Heat", "Heat", "Heat", "Heat"],
            "year": ["1995", "1995", "1986", "1995"],
        }
    )
    ids, collisions = item_identifiers(items)
    assert ids == {
        "1": "Heat (1995)",
        "2": "Heat (1995) [2]",
        "3": "Heat (1986)",
        "4": "Heat (1995) [3]",
    }
    assert collisions == 2


def test_ml100k_identifiers_are_unique():
    from llm4rec.data.sources import load_ml100k

    ids, collisions = item_identifiers(load_ml100k().items)
    assert len(set(ids.values())) == len(ids) == 1682
    assert collisions > 0  # ml-100k has duplicate titles


def test_empty_title_is_named():
    items = pd.DataFrame({"item_id": ["7"], "title": ["  "], "year": ["1999"]})
    with pytest.raises(ValueError, match="item '7' has an empty title"):
        item_identifiers(items)


def test_trie_walk_and_history_exclusion():
    trie = ItemTrie.build({"a": [5, 6, END], "b": [5, 7, END], "c": [8, END]})
    assert set(trie.children[0]) == {5, 8}
    node5 = trie.children[0][5]
    assert set(trie.children[node5]) == {6, 7}
    leaf = trie.children[trie.children[node5][6]][END]
    assert trie.is_item(leaf) and trie.item_at[leaf] == "a"
    assert trie.depth == 3

    def allowed(node: int, history: list[str]) -> set[int]:  # as beam_search expands a node
        excluded = trie.excluded_counts(history)
        return {
            t for t, child in trie.children[node].items() if not trie.only_excluded(child, excluded)
        }

    # excluding a only prunes a's own branch; excluding a and b prunes the shared prefix too
    assert allowed(node5, ["a"]) == {7}
    assert allowed(0, ["a", "b"]) == {8}
    assert allowed(0, ["zzz"]) == {5, 8}


def test_trie_refuses_collisions_and_unterminated_prefixes():
    with pytest.raises(ValueError, match="collides"):
        ItemTrie.build({"a": [1, 2, END], "b": [1, 2, END]})
    with pytest.raises(ValueError, match="collides"):
        ItemTrie.build({"a": [1, 2], "b": [1, 2, 3]})  # 'a' is a prefix of 'b' without a terminator
