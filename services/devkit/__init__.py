"""Local development kit: a real Kafka broker without Docker, the demo sink and the demo driver."""
