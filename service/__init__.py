"""The HTTP service: a FastAPI app that validates requests against model cards, enqueues jobs in
Redis with RQ, and serves job documents and PNGs. Imports no torch."""
