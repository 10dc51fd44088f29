"""``dmir bench``: datasets × tasks × methods → per-image results, tables and plots."""
