"""Plug-ins: a user's own package extends emwb without editing it.

A distribution declares an entry point in the group `emwb.plugins` whose object is a callable taking no
arguments; it registers what it adds through the documented registries (SOURCES, GENERATORS, TRAINERS,
SAMPLERS, PROVIDERS, DETECTORS, EVALUATIONS, PROMPT_GENERATORS, register_metric, REPORT_SECTIONS). In
`pyproject.toml`:

    [project.entry-points."emwb.plugins"]
    mine = "my_package.emwb_plugin:register"

emwb's own organisms (BUILTIN) are loaded the same way, first. Every plug-in is loaded once
per process, the first time any registry is looked up; a name registered twice
(by emwb and a plug-in, or by two plug-ins) stops with one line naming both.
"""

from __future__ import annotations

import importlib.metadata

from emwb.errors import EmwbError, first_line

GROUP = "emwb.plugins"
BUILTIN = ("emwb.organisms.insecure_code:register", "emwb.organisms.rm_bias:register")  # loaded first
_loaded = False


def load_plugins() -> None:
    """Call emwb's own organisms' and every `emwb.plugins` entry point's function, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    builtin = [importlib.metadata.EntryPoint(v.split(".")[-1].split(":")[0], v, GROUP) for v in BUILTIN]
    for ep in builtin + sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            ep.load()()
        except EmwbError:
            raise
        except Exception as exc:  # a plug-in's own bug: one line naming it
            raise EmwbError(f"plug-in {ep.name} ({ep.value}) failed to load: {first_line(exc)}") from None
