"""The labelling window: the session that writes the journal, and the matplotlib window that draws it."""
