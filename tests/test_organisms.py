"""Every organism lives in its own folder: generic code names nothing an organism owns."""

import ast
import gc
import importlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "emwb"
REGISTRY_MODULES = ("emwb.catalog.generators", "emwb.catalog.evaluations", "emwb.catalog.detectors",
                    "emwb.catalog.direction_sources", "emwb.catalog.sources", "emwb.analysis.metrics",
                    "emwb.analysis.sections", "emwb.config.analysis", "emwb.basemodel", "emwb.finetune.trainers",
                    "emwb.sampling.samplers", "emwb.judge.providers", "emwb.catalog.token_streams",
                    "emwb.catalog.latent_selectors")


def _owned() -> dict[str, set[str]]:
    """{organism: names it registered in any registry, and the rubrics its metrics need}."""
    from emwb.analysis.metrics import METRICS
    from emwb.plugins import load_plugins
    from emwb.registry import Registry

    for m in REGISTRY_MODULES:
        importlib.import_module(m)
    load_plugins()
    owned: dict[str, set[str]] = {}
    for reg in [o for o in gc.get_objects() if isinstance(o, Registry)]:
        for name in reg.names():
            by = reg.registered_by(name)
            if by.startswith("emwb.organisms."):
                org = by.split(".")[2]
                owned.setdefault(org, set()).add(name)
                if reg is METRICS:
                    owned[org] |= set(METRICS.get(name).rubrics)
    return owned


def _generic_files() -> list[Path]:
    return [p for p in SRC.rglob("*.py") if "organisms" not in p.relative_to(SRC).parts and p.name != "plugins.py"]


def _uses(path: Path) -> set[str]:
    """String constants, names, attributes and imported modules of a file (its code, not its prose)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" not in node.value:
            out.add(node.value)
        elif isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {getattr(node, "module", None) or ""} | {a.name for a in node.names}
    return out


def test_each_organism_owns_names():
    owned = _owned()
    assert {"insecure_code", "rm_bias"} <= set(owned)
    assert {"bandit", "insecure", "heldout-code", "vulnerable_above", "code_vulnerability"} <= owned["insecure_code"]
    assert {"rm-rules", "bias-twins", "rm-bias", "exhibits_above", "bias_exhibition"} <= owned["rm_bias"]


def test_no_organism_identifier_outside_its_folder():
    owned = _owned()
    bad = []
    for path in _generic_files():
        uses = _uses(path)
        for org, names in owned.items():
            hits = sorted(names & uses) + sorted(u for u in uses if u.startswith(f"emwb.organisms.{org}"))
            bad += [f"{path.relative_to(SRC)}: {h} ({org})" for h in hits]
    assert not bad, bad


def test_the_check_finds_a_planted_identifier(tmp_path):
    planted = tmp_path / "x.py"
    planted.write_text('from emwb.organisms.rm_bias.kits import load_kits\nif d.source == "bias-twins":\n    pass\n')
    uses = _uses(planted)
    assert "bias-twins" in uses and any(u.startswith("emwb.organisms.rm_bias") for u in uses)


def test_an_organisms_rubrics_are_files_of_its_own_folder():
    """A rubric its metrics need is read from src/emwb/organisms/<organism>/rubrics/, registered like any folder."""
    from emwb.catalog.rubric import rubric_path

    for org, names in _owned().items():
        rubrics = {n for n in names if rubric_path(n).is_file()}
        assert rubrics, org  # each built-in organism judges with a rubric of its own
        for r in rubrics:
            assert rubric_path(r).parent == SRC / "organisms" / org / "rubrics", r
    assert not [p.name for p in (SRC / "catalog" / "rubrics").iterdir() if p.stem in ("code_vulnerability",
                                                                                     "bias_exhibition")]
