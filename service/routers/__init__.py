"""One router per resource: jobs, models (and samplers), operations."""
