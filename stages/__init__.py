"""distill stages: generate, filter, train, eval."""
