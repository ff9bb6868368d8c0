"""Scale benchmarks (not run as tests): `python -m benchmarks --help`."""
