"""Model organisms: each kind is one package that registers, in its `register()`, everything it owns (data
generators, evaluation prompts, detectors, metrics, report sections). emwb loads them as plug-ins, first,
through the same mechanism as a user's own (`emwb.plugins`), so an organism is added the way any extension is.
"""
