"""htbase: archive a web page five ways and summarize it."""
