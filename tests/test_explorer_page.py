"""The explorer page (issue 24): rendered from a small synthetic data dict and driven in one headless Chromium."""

import base64
import io
import json
import math
import re
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urlparse

import numpy as np
import pytest
from browser import full_screenshot, logged_page, requested_urls
from PIL import Image

from bagnet_keras.report.explorer_page import render_explorer, write_explorer_page

N, K, G, SIZE = 3, 5, 8, 32
CNN_GRID, CNN_GEOMETRY = (4, 4), {"patch_size": 11, "stride": 8, "offset": -2}
BAGNET_GRID, BAGNET_GEOMETRY = (3, 3), {"patch_size": 9, "stride": 8, "offset": 0}
# The last name would end the page's data <script> early if it were not escaped.
CLASSES = ["cross", "ring", "triangle", "square", "star </script><b>"]


def png_url(array):
    """A uint8 array (h, w) or (h, w, 3) as a PNG data URL."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gray_url(values):
    """A map as the grayscale PNG the page expects: 0..255 = its min..max."""
    values = np.asarray(values, dtype=float)
    span = values.max() - values.min()
    return png_url(np.zeros_like(values) if span == 0 else 255 * (values - values.min()) / span)


def scenes(rng):
    """N images of SIZE x SIZE: a colour gradient with a bright disc somewhere."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = []
    for i in range(N):
        image = np.stack([(xx * 5 + 60 * i) % 256, yy * 6, np.full_like(xx, 90 + 50 * i)], axis=-1).astype(float)
        cy, cx = rng.integers(8, SIZE - 8, size=2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
        image[disc] = rng.integers(150, 256, size=3)
        images.append(image.astype(np.uint8))
    return images


def crops(rng, images, size, count):
    """``count`` random size x size crops of the images, as data URLs."""
    out = []
    for _ in range(count):
        i, y, x = rng.integers(N), *rng.integers(0, SIZE - size, size=2)
        out.append(png_url(images[i][y : y + size, x : x + size]))
    return out


def synthetic_data(seed=0):
    rng = np.random.default_rng(seed)
    images = scenes(rng)
    labels = [0, 1, 4]
    models = {}
    for i in range(N):
        models[i] = {}
        for name in ("small-cnn", "bagnet-9"):
            logits = rng.normal(0, 2, K)
            probabilities = np.exp(logits) / np.exp(logits).sum()
            models[i][name] = {"predicted": int(probabilities.argmax()), "probabilities": probabilities.tolist()}
    activation = rng.gamma(2.0, 1.0, (N, *CNN_GRID, G))
    attribution = rng.normal(0, 0.3, (N, *CNN_GRID, G, K)) * activation[..., None]
    yy, xx = np.mgrid[0:16, 0:16]
    groups = [
        {
            "name": f"group {g}",
            "visualization": None if g == G - 1 else png_url(127 + 127 * np.sin((xx * (g + 1) + yy * (3 - g)) / 3)),
            "examples": crops(rng, images, 11, 6),
        }
        for g in range(G)
    ]
    evidence = rng.normal(0, 2, (N, *BAGNET_GRID, K))
    concepts = {str(k): [{"share": s, "examples": crops(rng, images, 9, 5)} for s in (0.5, 0.3, 0.2)] for k in range(4)}
    concept = rng.integers(-1, 3, (N, *BAGNET_GRID, K))
    concept[0, :, :, 4] = 0  # class 4 has no concepts at all: the page says "no concept"
    grad_cam = np.maximum(attribution.sum(axis=3), 0)  # (N, h, w, K)
    maps = [
        ("small-cnn", "gradcam", "CNN Grad-CAM (conv5_relu)", grad_cam, {"randomization": True, "invariance": None}),
        ("bagnet-9", "evidence", "BagNet evidence", evidence, {"randomization": True, "invariance": True}),
        ("small-cnn", "layercam", "CNN best map by deletion: layercam@conv3_relu", rng.random((N, 8, 8, K)), {}),
    ]
    return {
        "title": "Explorer test <page>",
        "class_names": CLASSES,
        "images": [
            {
                "index": 10 * i + 3,
                "label": labels[i],
                "src": png_url(images[i]),
                "size": [SIZE, SIZE],
                "models": models[i],
            }
            for i in range(N)
        ],
        "cnn": {
            "name": "small-cnn",
            "layer": "conv4_relu",
            "grid": list(CNN_GRID),
            "geometry": CNN_GEOMETRY,
            "groups": groups,
            "activation": activation.tolist(),
            "attribution": attribution.tolist(),
        },
        "bagnet": {
            "name": "bagnet-9",
            "grid": list(BAGNET_GRID),
            "geometry": BAGNET_GEOMETRY,
            "evidence": evidence.tolist(),
            "concept": concept.tolist(),
            "concepts": concepts,
        },
        "maps": [
            {
                "model": model,
                "method": method,
                "label": label,
                "heat": [[gray_url(heat[i, :, :, k]) for k in range(K)] for i in range(N)],
                "scores": {"pointing": [1.0, 0.0, None], "deletion_area": rng.random(N).tolist()},
                "summary": {"pointing": 0.5, "deletion_area": float(rng.random())},
                "sanity": sanity,
            }
            for model, method, label, heat, sanity in maps
        ],
    }


def js_precision(value, digits=3):
    """``value.toPrecision(digits)`` as JavaScript writes it (ECMA-262 Number.prototype.toPrecision)."""
    if value == 0:
        return "0." + "0" * (digits - 1)
    sign, exact = ("-" if value < 0 else ""), Decimal(abs(value))
    exponent = exact.adjusted()
    mantissa = exact.scaleb(-exponent).quantize(Decimal(1).scaleb(1 - digits), ROUND_HALF_UP)
    if mantissa >= 10:  # 9.995 -> 10.0: one more digit before the point
        exponent += 1
        mantissa = (mantissa / 10).quantize(Decimal(1).scaleb(1 - digits), ROUND_HALF_UP)
    figures = str(mantissa).replace(".", "")
    if exponent < -6 or exponent >= digits:
        point = figures[0] + ("." + figures[1:] if digits > 1 else "")
        return f"{sign}{point}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"
    if exponent >= 0:
        whole, fraction = figures[: exponent + 1], figures[exponent + 1 :]
        return sign + whole + ("." + fraction if fraction else "")
    return f"{sign}0.{'0' * (-exponent - 1)}{figures}"


def nearest(geometry, grid, py, px):
    """The grid position whose receptive-field centre is nearest the pixel (ties: the later one)."""
    p, s, o = geometry["patch_size"], geometry["stride"], geometry["offset"]

    def one(v, n):
        return min(range(n), key=lambda r: (abs(o + s * r + (p - 1) / 2 - v), -r))

    return one(py, grid[0]), one(px, grid[1])


def ranked(values):
    return sorted(range(len(values)), key=lambda k: (-values[k], k))


# -- the page as a file


def test_page_is_one_small_self_contained_file(tmp_path):
    data = synthetic_data()
    path = write_explorer_page(data, str(tmp_path / "out"))
    assert path == str(tmp_path / "out" / "explorer.html")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["explorer.html"]
    text = open(path, encoding="utf-8").read()
    assert not re.search(r"\b(?:https?|wss?|ftp)://", text), "the page names a URL"
    assert text.count("</script>") == 2, "a string in the data ended a <script> early"
    embedded = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(embedded) == json.loads(json.dumps(data))
    overhead = len(text) - len(embedded)
    assert overhead < 40_000 and len(text) < 400_000, (overhead, len(text))


def test_bad_data_is_refused_with_the_place_named():
    data = synthetic_data()
    data["cnn"]["groups"][2]["examples"][1] = "https://example.com/crop.png"
    with pytest.raises(ValueError, match=r"cnn\['groups'\]\[2\]\['examples'\]\[1\] is 'https://example.com"):
        render_explorer(data)
    with pytest.raises(ValueError, match=r"data\['bagnet'\]\['evidence'\] has 2 images, but data\['images'\] has 3"):
        render_explorer({**synthetic_data(), "bagnet": {**data["bagnet"], "evidence": data["bagnet"]["evidence"][:2]}})
    with pytest.raises(ValueError, match="lacks \\['images'\\]"):
        render_explorer({"title": "t", "class_names": []})


def test_not_a_number_becomes_null():
    data = synthetic_data()
    data["bagnet"]["evidence"][0][0][0][1] = math.nan
    data["maps"][0]["summary"]["pointing"] = np.float32("inf")
    text = render_explorer(data)
    embedded = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', text, re.S).group(1)
    back = json.loads(embedded, parse_constant=lambda name: pytest.fail(f"{name} in the page's JSON"))
    assert back["bagnet"]["evidence"][0][0][0][1] is None and back["maps"][0]["summary"]["pointing"] is None


# -- the page in a browser: one Chromium for every check below


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explorer")
    data = synthetic_data()
    path = write_explorer_page(data, str(folder / "full"))
    with logged_page(path, folder / "profile") as driver:
        yield driver, data, path


def quiet(driver):
    """No console message of level WARNING or above, and no request but for the page and data: URLs."""
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
    # Chromium's own start page loads chrome:// files; what a file:// page asks for must be file: or data:
    requests = [(d, u) for d, u in requested_urls(driver) if urlparse(d).scheme in ("file", "data", "")]
    assert requests and all(urlparse(u).scheme in ("file", "data") for _, u in requests), requests
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert all(urlparse(u).scheme in ("file", "data") for u in resources), resources


def open_page(driver, path):
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(f"file://{path}")
    # get() waits for the load event, but a busy machine can answer it while the page is still 'interactive'
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def click(driver, element_id):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def click_pixel(driver, py, px):
    """Click the middle of image pixel (py, px); Selenium 4 offsets are from the element's centre."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    image = driver.find_element(By.ID, "main-image")
    scale, width, height = driver.execute_script(
        "const e = arguments[0]; return [Number(e.dataset.scale), e.offsetWidth, e.offsetHeight];", image
    )
    assert (width, height) == (SIZE * scale, SIZE * scale) and 256 <= width <= 320
    x, y = (px + 0.5) * scale - width / 2, (py + 0.5) * scale - height / 2
    ActionChains(driver, duration=0).move_to_element_with_offset(image, round(x), round(y)).click().perform()
    chosen = driver.execute_script(
        "const p = document.getElementById('pixel'); return [p.dataset.row, p.dataset.column];"
    )
    assert chosen == [str(py), str(px)]


def shown(driver):
    """Every shown number of the two panels: (kind, group, class, text), in page order."""
    return driver.execute_script(
        """return [...document.querySelectorAll('#panels [data-kind]')].filter(e => e.offsetParent !== null)
           .map(e => [e.dataset.kind, e.dataset.group ?? null, e.dataset.class ?? null, e.textContent,
                      e.dataset.concept ?? null]);"""
    )


def check_numbers(driver, data, i, py, px, groups=6, classes=3, chosen=None):
    """The panels show, for image i at pixel (py, px), exactly the data's numbers, in the promised order."""
    from selenium.webdriver.common.by import By

    cnn, bagnet = data["cnn"], data["bagnet"]
    r, c = nearest(CNN_GEOMETRY, CNN_GRID, py, px)
    r2, c2 = nearest(BAGNET_GEOMETRY, BAGNET_GRID, py, px)
    assert driver.find_element(By.ID, "cnn-position").text == f"row {r}, column {c}"
    assert driver.find_element(By.ID, "bagnet-position").text == f"row {r2}, column {c2}"
    numbers = shown(driver)
    activation, attribution = cnn["activation"][i][r][c], cnn["attribution"][i][r][c]
    rows = [(int(g), text) for kind, g, _, text, _ in numbers if kind == "cnn-activation"]
    assert [g for g, _ in rows] == ranked(activation)[:groups]
    assert all(text == js_precision(activation[g]) for g, text in rows)
    order = ranked(data["images"][i]["models"]["small-cnn"]["probabilities"])[:classes]
    chosen = order[0] if chosen is None else chosen
    columns = order + ([chosen] if chosen not in order else [])
    cells = [(int(g), int(k), text) for kind, g, k, text, _ in numbers if kind == "cnn-attribution"]
    assert [(g, k) for g, k, _ in cells] == [(g, k) for g, _ in rows for k in columns]
    assert all(text == js_precision(attribution[g][k]) for g, k, text in cells)
    logits, concept = bagnet["evidence"][i][r2][c2], bagnet["concept"][i][r2][c2]
    patch = [(int(k), text) for kind, _, k, text, _ in numbers if kind == "bagnet-logit"]
    assert [k for k, _ in patch] == ranked(logits)[:classes]
    assert all(text == js_precision(logits[k]) for k, text in patch)
    found = {int(k): int(j) for kind, _, k, _, j in numbers if kind == "bagnet-concept"}
    assert found == {k: concept[k] if str(k) in bagnet["concepts"] else -1 for k, _ in patch}
    return len(rows), len(columns), len(patch)


def test_precision_helper_writes_numbers_as_javascript_does(explorer):
    driver, _, _ = explorer
    rng = np.random.default_rng(1)
    values = [0.0, 1.0, -1.0, 0.1, 0.125, 1.125, -2.675, 9.995, 99.95, 999.5, 123456.0, 1e21, 1e-7, 1.234e-6]
    values += [0.000999, 0.0009995, 5e-324, 1.7976931348623157e308]
    values += (rng.normal(size=40) * 10.0 ** rng.integers(-9, 9, size=40)).tolist()
    written = driver.execute_script("return arguments[0].map(v => v.toPrecision(3));", values)
    assert [js_precision(v) for v in values] == written


def test_a_click_shows_the_numbers_of_that_image_and_position(explorer):
    from selenium.webdriver.common.by import By

    driver, data, path = explorer
    open_page(driver, path)
    # by default: the first image, its centre pixel
    assert check_numbers(driver, data, 0, SIZE // 2, SIZE // 2) == (6, 3, 3)
    click(driver, "thumb-1")
    main = driver.find_element(By.ID, "main-image")
    assert main.get_attribute("src") == data["images"][1]["src"]
    assert "selected" in driver.find_element(By.ID, "thumb-1").get_attribute("class")
    assert "#13" in driver.find_element(By.ID, "image-info").text
    for py, px in ((27, 4), (0, 31), (15, 15), (31, 31)):
        click_pixel(driver, py, px)
        assert check_numbers(driver, data, 1, py, px) == (6, 3, 3), (py, px)
    options = driver.execute_script("return [...document.getElementById('class-select').options].map(o => o.text);")
    assert options == [f"{k}: {name}" for k, name in enumerate(CLASSES)]
    quiet(driver)


def test_show_all_reveals_every_group_and_class(explorer):
    driver, data, path = explorer
    open_page(driver, path)
    click(driver, "thumb-2")
    click_pixel(driver, 12, 20)
    for button in ("cnn-all-groups", "cnn-all-classes", "bagnet-all-classes"):
        click(driver, button)
    assert check_numbers(driver, data, 2, 12, 20, groups=G, classes=K) == (G, K, K)
    examples = "document.querySelectorAll('#cnn-table tr[data-group=\"%d\"] .example').length"
    first = ranked(data["cnn"]["activation"][2][1][2])[0]
    assert driver.execute_script(f"return {examples % first};") == 4
    driver.execute_script(f"document.querySelector('#cnn-table tr[data-group=\"{first}\"] .more').click();")
    assert driver.execute_script(f"return {examples % first};") == 6
    for button in ("cnn-all-groups", "cnn-all-classes", "bagnet-all-classes"):
        click(driver, button)
    assert check_numbers(driver, data, 2, 12, 20) == (6, 3, 3)
    quiet(driver)


def maps_drawn(driver, i, k):
    from selenium.webdriver.support.ui import WebDriverWait

    script = "return [...document.querySelectorAll('#maps canvas')].map(c => c.dataset.drawn === arguments[0]);"
    WebDriverWait(driver, 5).until(lambda d: all(d.execute_script(script, f"{i}:{k}")))
    return driver.execute_script("return [...document.querySelectorAll('#maps canvas')].map(c => c.toDataURL());")


def test_choosing_a_class_changes_the_maps(explorer):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, data, path = explorer
    open_page(driver, path)
    click(driver, "thumb-1")
    probabilities = data["images"][1]["models"]["small-cnn"]["probabilities"]
    predicted, other = ranked(probabilities)[0], ranked(probabilities)[-1]
    select = Select(driver.find_element(By.ID, "class-select"))
    assert select.first_selected_option.get_attribute("value") == str(predicted)
    before = maps_drawn(driver, 1, predicted)
    assert len(before) == len(data["maps"])
    select.select_by_value(str(other))
    after = maps_drawn(driver, 1, other)
    assert all(a != b for a, b in zip(before, after, strict=True)), "a map did not change with the class"
    assert driver.find_element(By.ID, "maps-class").text == CLASSES[other]
    # the chosen class joins the CNN's columns, whatever its rank
    assert check_numbers(driver, data, 1, SIZE // 2, SIZE // 2, chosen=other) == (6, 4, 3)
    scores = driver.execute_script(
        "return [...document.querySelectorAll('#maps [data-kind=map-score]')].map(e => e.textContent);"
    )
    assert scores == [t for m in data["maps"] for t in ("0.00", js_precision(m["scores"]["deletion_area"][1]))]
    verdicts = driver.execute_script("return [...document.querySelectorAll('#maps .map')].map(e => e.innerText);")
    assert "✓ randomization" in verdicts[0] and "– invariance" in verdicts[0] and "– randomization" in verdicts[2]
    quiet(driver)


def test_pages_without_a_cnn_or_a_bagnet_or_maps(explorer, tmp_path):
    from selenium.webdriver.common.by import By

    driver, data, _ = explorer
    no_cnn = write_explorer_page({**data, "cnn": None, "maps": []}, str(tmp_path / "no_cnn"))
    open_page(driver, no_cnn)
    visible = "return ['cnn-panel', 'bagnet-panel', 'maps-panel'].map(id => !document.getElementById(id).hidden);"
    assert driver.execute_script(visible) == [False, True, False]
    click_pixel(driver, 3, 28)
    r2, c2 = nearest(BAGNET_GEOMETRY, BAGNET_GRID, 3, 28)
    logits = data["bagnet"]["evidence"][0][r2][c2]
    assert driver.find_element(By.ID, "bagnet-position").text == f"row {r2}, column {c2}"
    assert [t for kind, _, _, t, _ in shown(driver) if kind == "bagnet-logit"] == [
        js_precision(logits[k]) for k in ranked(logits)[:3]
    ]
    open_page(driver, write_explorer_page({**data, "bagnet": None}, str(tmp_path / "no_bagnet")))
    assert driver.execute_script(visible) == [True, False, True]
    click_pixel(driver, 30, 2)
    assert driver.find_element(By.ID, "cnn-position").text == "row 3, column 0"
    quiet(driver)


def test_screenshot(explorer, tmp_path):
    driver, data, path = explorer
    open_page(driver, path)
    click(driver, "thumb-2")
    # a patch whose shown classes have concepts, so that the picture shows some
    bagnet = data["bagnet"]
    r, c = max(
        np.ndindex(*BAGNET_GRID),
        key=lambda rc: sum(
            bagnet["concept"][2][rc[0]][rc[1]][k] >= 0 for k in ranked(bagnet["evidence"][2][rc[0]][rc[1]])[:3]
        ),
    )
    click_pixel(driver, 8 * r + 4, 8 * c + 4)
    assert driver.execute_script("return document.querySelectorAll('#bagnet-table .example').length;") > 0
    maps_drawn(driver, 2, data["images"][2]["models"]["small-cnn"]["predicted"])
    shot = full_screenshot(driver, tmp_path / "explorer_screenshot.png")
    driver.set_window_size(1200, 900)
    assert shot.stat().st_size > 20_000
    print(f"\nscreenshot of the explorer: {shot}")
    quiet(driver)
