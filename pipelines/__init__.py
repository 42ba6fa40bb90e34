"""aicrush pipelines: config, pipeline definitions, local runs, compile and submit, the CLI."""
