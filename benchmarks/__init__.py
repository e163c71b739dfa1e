"""patronbot's benchmarks: ingest throughput, privacy requests and history reads, run by `make bench`."""
