"""Development data for each module (filled by the seed issue)."""
