"""Word count: the built-in job. Shipped to nodes as source text."""

from pymr.tokenize import Combiner


def make_combiner(tokenizer: str) -> Combiner:
    """Map + combine: count words of every split this executor runs."""
    return Combiner(tokenizer)
