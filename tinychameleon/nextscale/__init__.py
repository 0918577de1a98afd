"""Next-scale prediction (VAR): a transformer that draws an image one whole scale at a time, and reads it."""
