"""Built-in component plugins, registered through the same hooks as third-party ones."""
