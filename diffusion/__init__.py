"""The math core: U-Net, noise schedules, samplers, guidance, training and data, in plain PyTorch.

Imports nothing from the store, the worker or the service. The package itself imports no torch, so
that torch-free modules here (``diffusion.names``) can be read by the service.
"""
