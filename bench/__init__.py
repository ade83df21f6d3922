"""
Benchmarks of the provisioning chain against the approach it replaces.

Run `python -m bench.provisioning` from the repository root; `bench.provisioning`
describes what is measured and how.
"""
