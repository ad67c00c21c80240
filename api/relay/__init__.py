"""The relay: the pub/sub hub, one job's stream of messages, the queue client."""
