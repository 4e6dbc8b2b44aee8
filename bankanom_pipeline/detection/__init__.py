"""Detection: feature space, IF/LOF models and their registry, scoring, incidents with root cause, and
evaluation against the generator's ground truth."""
