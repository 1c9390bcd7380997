"""The benchmark: workloads, peer implementations, measured device limits and the runner."""
