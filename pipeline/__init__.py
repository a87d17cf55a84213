"""distill framework: config, cache, records, runner, CLI."""
