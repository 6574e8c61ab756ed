"""The dispatcher: performs the side effects that action commands ask for, once per action_id."""
