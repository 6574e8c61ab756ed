"""`make chaos`: nothing lost, nothing done twice (as the receiver sees it), under kill -9 and a broker outage."""
