"""The registry's rows, a module per paradigm (or more): each declares its `PARADIGM` (its row
group, colour and place in the tables) and its `ROWS` (`ModelSpec`s, and the `variant`s and
`StageRow`s built from them, in llm4rec.models.spec's vocabulary). `llm4rec.models` collects every
module here; adding a paradigm's rows is adding a module."""
