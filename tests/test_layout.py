"""House rules that code review would otherwise have to remember."""
import ast
import re
from pathlib import Path

from feedback.settings import PROJECT_ROOT, Settings
from tests.import_graph import import_graph

CORE = ("feedback", "judges", "training", "db")

# The layer order, lowest first: a module may import from its own layer and the ones before it,
# never from a later one. The README's "Layers" line states the same order (checked below).
LAYERS = (("db",), ("feedback",), ("judges",), ("training",), ("cli", "pages", "app", "api"), ("testkit",),
          ("bench",), ("tests",))
# `python -m feedback` must keep working, so this two-line shim hands over to the CLI above the core.
# It is an entry point: nothing imports it.
ENTRY_SHIMS = {"feedback.__main__"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_streamlit_only_in_app_and_pages():
    offenders = [str(p.relative_to(PROJECT_ROOT)) for pkg in CORE for p in (PROJECT_ROOT / pkg).rglob("*.py")
                 if "streamlit" in _imports(p)]
    assert offenders == []


def test_no_html_rendering_of_anything():
    sources = [PROJECT_ROOT / "app.py", *(PROJECT_ROOT / "pages").glob("*.py")]
    # The one st.html: pages/common.py's fetch_quietly, fixed <img> markup (the session cookie).
    allowed_html = {"common.py": 1}
    assert not [p.name for p in sources if "unsafe_allow_html" in p.read_text()
                or p.read_text().count("st.html(") > allowed_html.get(p.name, 0)]


def test_every_page_is_listed_in_app():
    app = (PROJECT_ROOT / "app.py").read_text()
    pages = {p.name for p in (PROJECT_ROOT / "pages").glob("*.py")} - {"__init__.py", "common.py"}
    assert pages and all(f'"pages/{name}"' in app for name in pages)


def test_every_setting_is_documented_in_readme():
    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]
    assert missing == []


def test_requirements_pin_cpu_torch_and_never_vllm():
    reqs = (PROJECT_ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", reqs, re.M)
    assert "vllm" not in re.sub(r"#.*", "", reqs).lower()


def test_requirements_hold_no_test_tools_or_optional_backends():
    """requirements.txt is what `make run` installs: test tools and stand-ins live in
    requirements-dev.txt, Ray in requirements-ray.txt."""
    names = {re.split(r"[\[=<>!~; ]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
             for line in re.sub(r"#.*", "", (PROJECT_ROOT / "requirements.txt").read_text()).splitlines()
             if line.strip()}
    dev_only = ("pytest", "hypothesis", "playwright", "llama-cpp-python", "ray", "ruff")
    assert not [n for n in names if n.startswith("-") or any(n == d or n.startswith(d + "-") for d in dev_only)]


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, group in enumerate(LAYERS) if top in group)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} imports {dep}" for module, deps in graph.items() if module not in ENTRY_SHIMS
                  for dep in deps if _layer(dep) > _layer(module))


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


GRAPH = import_graph(PROJECT_ROOT)


def test_every_module_has_a_layer():
    assert [m for m in GRAPH if not any(m.split(".")[0] in group for group in LAYERS)] == []


def test_imports_follow_the_layers():
    assert layer_violations(GRAPH) == []


def test_no_import_cycles():
    assert import_cycles(GRAPH) == []


def test_the_checks_catch_what_they_are_for():
    """The same checks on a graph with one import against the order and one cycle added."""
    bad = {**GRAPH, "feedback.queue": GRAPH["feedback.queue"] | {"training.rounds"},
           "judges.grading": GRAPH["judges.grading"] | {"judges.fake_cycle"}, "judges.fake_cycle": {"judges.grading"}}
    assert layer_violations(bad) == ["feedback.queue imports training.rounds"]
    assert ["judges.fake_cycle", "judges.grading"] in import_cycles(bad)


def test_function_level_imports_are_read(tmp_path):
    (tmp_path / "feedback").mkdir()
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "rounds.py").write_text("")
    (tmp_path / "feedback" / "late.py").write_text("def f():\n    from training import rounds\n")
    assert layer_violations(import_graph(tmp_path)) == ["feedback.late imports training.rounds"]


def test_readme_states_the_layer_order():
    readme = (PROJECT_ROOT / "README.md").read_text()
    stated = " → ".join(", ".join(f"`{name}`" for name in group) for group in LAYERS)
    assert stated in readme
