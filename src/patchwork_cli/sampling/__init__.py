"""Which images a person should look at next: filter, then score, then select (pure numpy)."""
