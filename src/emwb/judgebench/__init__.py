"""`emwb judges bench`: any judge measured against the published GPT-4o judgments before it is trusted."""
