"""The Redis tier: keys, codec, circuit breaker and a fail-soft store shared by all application instances."""
