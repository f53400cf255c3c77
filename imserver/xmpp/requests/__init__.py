"""IQ request handlers, one module per concern; each has ``install(component)``."""
