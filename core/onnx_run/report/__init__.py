"""Results tables (Markdown, JSON) and figures (PNG) of a run directory."""
