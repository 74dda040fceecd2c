"""The rerun test's 40-item toy dataset (rerun and multi-process tests)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


COLOURS = ["red", "blue", "green", "old", "dark", "happy", "cold", "small"]


NOUNS = ["car", "sky", "house", "train", "river"]


TITLES = [f"{c} {n}" for c in COLOURS for n in NOUNS]  # 40 items


WORDS = sorted(
    set(COLOURS)
    | set(NOUNS)
    | {"items", ":", ";", "next", "(", ")", "1990", "1991", "1992", "Comedy", "Drama"}
)


def write_dataset(folder: Path) -> None:
    """48 users, each walking the catalogue from its own start with its own stride (18-30 items)."""
    inter = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(48):
        for t in range(18 + u % 13):
            inter.append(f"u{u}\ti{(u + t * (1 + u % 4)) % len(TITLES)}\t{t}")
    item = ["item_id:token\ttitle:token_seq\tyear:token\tgenres:token_seq\tdescription:token_seq"]
    item += [
        f"i{i}\t{title}\t{1990 + i % 3}\t{'Comedy' if i % 2 else 'Drama'}\t{title}"
        for i, title in enumerate(TITLES)
    ]
    (folder / "toy.inter").write_text("\n".join(inter) + "\n")
    (folder / "toy.item").write_text("\n".join(item) + "\n")
