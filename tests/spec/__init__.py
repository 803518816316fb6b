"""What each source document names, per module, for the catalog and example-query tests.

Each module file (tests/spec/<module>.py) defines:

  MODULE = "chatbot"                   # the schema
  TABLES = {"conversations": ["id", "user_id", ...], ...}   # every table and the columns the document names
  INDEXES = ["idx_conversations_user_id", ...]              # every index name the document gives
  VIEWS = ["..."]                      # every view
  FUNCTIONS = ["..."]                  # every SQL function (name only)
  TRIGGERS = ["..."]                   # every trigger name
  EXAMPLE_QUERIES = ["SELECT ...", ...]  # the document's example queries, runnable as they are with
                                       # search_path set to the module (placeholders like '...'
                                       # replaced by literals); each runs in a transaction that is
                                       # rolled back, against the empty schema
"""

MODULES = ("minno", "chatbot", "assistant", "supervisor", "knowledge", "slackbot")
