"""Mixed-modal documents: text and images in any order (document.py), the per-row grammar that keeps
images whole (grammar.py), a decoding engine that knows no layout (engine.py) and the task families
that teach the model to edit, answer, add, count and continue (families.py)."""
