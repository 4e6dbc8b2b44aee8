"""Re-rankers that learn from analysts' labels: a supervised model over the features and the
unsupervised score, gated on a held-out share of the labels (``core``), and the choice of which items
to ask analysts about next (``selection``). docs/reranking.md explains both."""
