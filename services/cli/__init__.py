"""`postcall`: the command line for operators (topics, dead letters, configuration, explain, re-extraction)."""
