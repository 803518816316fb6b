"""The output format names, apart from render.py so that option parsing (and --help) stays light."""

# tabulate formats worth offering (each is checked against tabulate.tabulate_formats in the tests)
TABULATE_FORMATS = ("plain", "simple", "github", "psql", "grid", "pipe", "rst", "orgtbl", "tsv", "html",
                    "latex", "jira", "mediawiki", "rounded_outline", "simple_grid")
FORMATS = ("table", "json", "csv", "ndjson", *TABULATE_FORMATS)
