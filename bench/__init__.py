"""The benchmarks of ../shared/spec/benchmarks.md: one module per benchmark, each a command
(`python -m bench.<name>`) that writes JSON and a markdown table under docs/benchmarks/."""
