"""The shared runtime: mechanisms only, no business rules."""
