"""The router: post-call flows, conditions, templates and deterministic action commands."""
