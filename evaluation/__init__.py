"""Measuring a generator's quality and rendering it: the tables of ../shared/spec/evaluation.md
(`python -m evaluation evaluate`), the card's typed quality record, and docs/model-card.md with its
plots (`python -m evaluation model-card`).

Not shipped: neither the `imagegen` package nor the images contain it; it runs from a checkout,
like `bench`. It may import every layer below it (the worker's engine samples for it).
"""
