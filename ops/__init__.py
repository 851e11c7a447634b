"""Operations: the `kubegate` CLI, the demo, benchmarks and the Kubernetes API simulator."""
