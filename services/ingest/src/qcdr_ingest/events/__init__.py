"""Runtime events from every source: adapters, ``POST /v1/events/{source}``, storage and reads."""
