"""What the API, the CLI and the worker agree on, with no torch: the request (its fields, defaults,
ranges, checks and messages), the job record and its Redis keys, the result store, the settings both
sides read, image-input decoding and model choice.

Layers (import-linter checks them, see pyproject.toml): `diffusion` <- `model_store` <- `contract`
<- {`service`, `worker`} <- `imagegen`; nothing here imports torch or `diffusion`.
"""
