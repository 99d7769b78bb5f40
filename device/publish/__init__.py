"""Where results go: MQTT (topics, payloads, outbox, discovery), console, snapshots, /metrics."""
