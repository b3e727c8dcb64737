"""The documentation: a short README, a page per method in step with the measures behind it, and the built site.

The site is built with ``mkdocs build --strict`` (a broken link, a missing page or a docstring mkdocstrings
cannot read fails it) and every page is opened in headless Chromium: it loads, every image on it is there,
and it asks for nothing but its own files.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import logged_page, requested_urls

import bagnet_keras
from bagnet_keras.explain.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


def _gallery():
    """examples/method_gallery.py, which writes the method pages' figures and sanity sections."""
    spec = importlib.util.spec_from_file_location("method_gallery", ROOT / "examples" / "method_gallery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short_and_says_how_to_cite():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert "pip install" in readme and "make demo" in readme and "make test" in readme
    assert "@inproceedings{brendel2019approximating" in readme
    assert f"version = {{{bagnet_keras.__version__}}}" in readme
    # every page README links to exists
    for link in re.findall(r"\]\(((?:docs/)[^)#]+)", readme):
        assert (ROOT / link).is_file(), link


def test_every_method_has_a_page_with_its_figure_and_the_sanity_checks_measured():
    gallery = _gallery()
    with open(ROOT / "docs" / "methods" / "figures" / "sanity.json", encoding="utf-8") as f:
        measured = json.load(f)
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert set(measured) == set(METHODS)
    for name in METHODS:
        page = gallery.page_name(name)
        text = (ROOT / "docs" / "methods" / f"{page}.md").read_text(encoding="utf-8")
        assert f"methods/{page}.md" in nav, name
        assert (ROOT / "docs" / "methods" / "figures" / f"{page}.png").is_file(), name
        assert f"`{name}`: {METHODS[name].description}." in text
        # the section is what the gallery writes from what it measured, not a hand-edited verdict
        assert gallery.sanity_section(name, measured[name]) in text, name
    assert gallery.sanity_table(measured) in (ROOT / "docs" / "sanity.md").read_text(encoding="utf-8")


def test_every_tutorial_is_listed_and_holds_its_outputs():
    """The notebooks are committed executed (`make tutorials`), so the site shows outputs without running them."""
    import nbformat

    notebooks = sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))
    listing = (ROOT / "docs" / "tutorials" / "index.md").read_text(encoding="utf-8")
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert len(notebooks) >= 4
    for path in notebooks:
        assert f"({path.name})" in listing and f"tutorials/{path.name}" in nav, path.name
        code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        outputs = [o for c in code for o in c.outputs]
        assert all(c.execution_count for c in code), f"{path.name} is not executed"
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert any("image/png" in o.get("data", {}) or o.output_type == "stream" for o in outputs), path.name


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    return out


PAGE_CHECK = """
const images = Array.from(document.images);
return {
  title: document.title,
  heading: (document.querySelector("article h1") || {}).textContent || "",
  images: images.length,
  missing: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src")),
};
"""


def test_every_page_of_the_site_loads_with_its_images_and_no_network_request(site, tmp_path):
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(pages) >= 30 and (site / "api" / "explain.html").is_file()
    seen_images = 0
    with logged_page(pages[0], tmp_path / "profile") as driver:
        requested_urls(driver)  # what the browser's own start page asked for (chrome://...), before any of ours
        for path in pages:
            driver.get(path.as_uri())
            found = driver.execute_script(PAGE_CHECK)
            assert found["heading"].strip(), f"{path} has no heading"
            assert not found["missing"], f"{path}: images not shown: {found['missing']}"
            seen_images += found["images"]
            outside = [url for _, url in requested_urls(driver) if not url.startswith(("file:", "data:", "blob:"))]
            assert not outside, f"{path} asked the network for {outside}"
    assert seen_images >= 20  # the method pages' figures, among others
