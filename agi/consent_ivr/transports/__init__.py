"""Moving a call's bytes: process AGI (pyst2), the FastAGI server, and the runner both share."""
