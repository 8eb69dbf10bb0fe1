"""After the call: the tracking gate (only `granted` opens it) and the call-tracking step with its
GA4 send."""
