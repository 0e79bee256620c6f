"""Many SFU processes as one geofence: what they share through Redis (docs/operations.md)."""
