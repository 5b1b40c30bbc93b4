"""Cross-validated training: experiment config (TOML), losses, the fold loop and the run directory."""
