"""The test harness: a simulated Asterisk speaking the real AGI wire protocol."""
