"""Use cases: each one decides, authorises and owns exactly one transaction."""
