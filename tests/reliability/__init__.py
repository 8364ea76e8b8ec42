"""The fault suite: real kills, real corrupted files, fuzzed input (see the README, "Reliability")."""
