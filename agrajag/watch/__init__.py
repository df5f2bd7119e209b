"""The watcher: on every app host, follow the master znodes and apply them to the sinks."""
