//! Tracepoint layouts and kernel struct offsets of the running kernel.
