"""One module per Kafka API family; `registry.HANDLERS` maps api_key to (versions, handler)."""
