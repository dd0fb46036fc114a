"""The `imagegen` command line: generate images, train and export models, list the store.

Importing this package imports no torch, so that `imagegen --help` answers at once; each command
imports torch and the math core only when it runs.
"""
