"""House rules that code review would otherwise have to remember."""
import ast
import re
from pathlib import Path

from feedback.settings import PROJECT_ROOT, Settings

CORE = ("feedback", "judges", "training", "db")


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
    assert not [p.name for p in sources if "unsafe_allow_html" in p.read_text() or "st.html(" in p.read_text()]


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
