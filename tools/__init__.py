"""Tools that run real processes but are not tests: the harness, the demo, the benchmarks
and the capture of repmgr fixtures."""
