"""Reading runs back from Temporal: one history reader, and status, the dead-letter queue,
redrive and fork, the timeline and the inbox built on it."""
