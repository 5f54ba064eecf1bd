"""emwb: the emergent-misalignment workbench."""
