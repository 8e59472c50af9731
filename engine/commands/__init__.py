"""One module per group of CLI commands; each defines `register(group)`."""
