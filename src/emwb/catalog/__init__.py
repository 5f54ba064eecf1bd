"""The catalogue: what experiments refer to by name. Registered upstream files (fetched, verified), data
generators and sources, question sets, rubrics and evaluations. Data, not code, wherever it can be."""
