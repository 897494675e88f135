"""tracegrad.nn: neural-network modules, init and functional ops."""
