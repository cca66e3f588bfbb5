"""The runtime: the connection to Temporal, the embedded server, the workflow sandbox, worker
assembly, telemetry and logs."""
