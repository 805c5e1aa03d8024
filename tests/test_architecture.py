"""The package's shape: imports go one way, down the layers of ARCHITECTURE.md; no module edits sys.path."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["errors", "files", "device", "distributed", "sandbox", "data", "models", "evaluation", "inference", "explain",
          "visualize", "training", "serving", "cli"]
BASE = {"errors", "files", "device", "distributed", "sandbox"}  # layer 0: may import each other


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pneumo_core" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return 0 if parts[1] in BASE else LAYERS.index(parts[1])


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_imports_go_down_the_layers():
    upward = []
    for path in (ROOT / "pneumo_core").rglob("*.py"):
        me = _layer(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if me is None:
            continue
        for mod in _imports(path):
            there = _layer(mod)
            if there is not None and there > me:
                upward.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not upward, upward


def test_every_module_has_a_layer():
    stray = [p.name for p in (ROOT / "pneumo_core").glob("*.py")
             if p.stem not in BASE | {"__init__", "__main__"}]
    assert not stray, f"top-level modules outside the layers: {stray}"


def test_pneumo_core_imports_without_streamlit():
    """Streamlit is imported inside functions only (pneumo_core.serving): the library, the trainer and the
    command line run where it is not installed."""
    top = []
    for path in (ROOT / "pneumo_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; imports inside functions are lazy
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            top += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert not top, top


def test_nothing_edits_sys_path():
    files = [ROOT / "app.py", ROOT / "train.py", *[p for d in ("pages", "pneumo_core", "tests", "bench")
                                                   for p in (ROOT / d).rglob("*.py")]]
    offenders = [str(p.relative_to(ROOT)) for p in files
                 if "sys.path.insert" in p.read_text() and p.name != "test_architecture.py"]
    assert not offenders


def test_no_private_streamlit_api():
    for p in [ROOT / "app.py", *(ROOT / "pages").glob("*.py")]:
        for mod in _imports(p):
            assert not (mod.startswith("streamlit.") and mod != "streamlit.testing.v1"), f"{p.name}: {mod}"


def _arch_names_spelled(source: str) -> list[str]:
    """Strings of ``source`` that are an architecture's name or display name, or f-strings that glue one into their
    text; docstrings, comments and prose (help texts that give an example) are not looked at."""
    from pneumo_core.models.networks import ARCHS

    names = {*ARCHS, *(a.display_name for a in ARCHS.values())}
    word = re.compile("|".join(rf"(?<![\w-]){re.escape(x)}(?![\w-])" for x in names))
    tree = ast.parse(source)
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    glued = {id(part) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for part in n.values}
    out = []
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Constant) and isinstance(n.value, str)) or id(n) in docs:
            continue
        if n.value.strip() in names or (id(n) in glued and word.search(n.value)):
            out.append(f"line {n.lineno}: {n.value!r}")
    return out


def test_no_architecture_is_named_outside_its_arch_entry():
    """Issue 27 item 4: an architecture is spelled in its ``Arch`` entry (models/networks.py) only; a study's choice
    of one is in its spec (``experiments/*/study.toml``), read through ``decisions.stated``."""
    assert _arch_names_spelled('STAGE_A = "resnet18"')  # the checker finds what it must
    assert _arch_names_spelled('name = f"{t}: EfficientNet-Lite0\'s seeds {s}"')
    assert not _arch_names_spelled('"""ResNet18 here."""\nHELP = "the architecture, e.g. resnet18"')
    found = [f"{p.relative_to(ROOT)} {hit}" for p in sorted((ROOT / "pneumo_core").rglob("*.py"))
             if p != ROOT / "pneumo_core" / "models" / "networks.py" for hit in _arch_names_spelled(p.read_text())]
    assert not found, found


def test_every_imported_package_is_declared():
    """Issue 27 item 10: each third-party module the product imports (pneumo_core, pages, app.py, train.py) comes
    from a distribution pyproject.toml declares, not only from one that happens to bring it along."""
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    def canon(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {canon(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in deps}
    files = [*(ROOT / "pneumo_core").rglob("*.py"), *(ROOT / "pages").rglob("*.py"), ROOT / "app.py", ROOT / "train.py"]
    modules = set()
    for f in files:
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Import):
                modules |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                modules.add(n.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"pneumo_core", "pages", "__future__"}
    dists = packages_distributions()
    assert "matplotlib" in modules and "numpy" in modules  # the check sees what it must
    undeclared = sorted(m for m in modules if not {canon(d) for d in dists.get(m, [m])} & declared)
    assert not undeclared, undeclared
