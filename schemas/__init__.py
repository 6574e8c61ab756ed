"""Wire contracts shared by the services: topics, events, headers and the agent configuration format."""
