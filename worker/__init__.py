"""The GPU worker: an RQ worker that keeps its models loaded and batches every queued request into
one sampler batch, step by step (continuous batching). `python -m worker` runs it."""
