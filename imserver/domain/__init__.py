"""Pure domain code: no I/O, no framework imports. Tested without a server."""
