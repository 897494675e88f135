"""tracegrad.optim: optimizers (SGD, Adam, AdamW) and LR schedulers."""
