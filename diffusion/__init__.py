"""The math core: U-Net, noise schedules, samplers, guidance, training and data, in plain PyTorch.

Imports nothing from the store, the contract, the worker or the service (import-linter checks it). The
API's vocabulary of these names (sampler names, ranges) is declared in ``contract.names``, and a test
keeps the two in step.
"""
