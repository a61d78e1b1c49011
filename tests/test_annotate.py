"""The annotation step: page, contact sheet, the --serve server, and a real headless browser."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from as3l_plugin import annotate as an
from as3l_plugin.annotations import SKIPPED, UNLABELED, read_labels_csv
from as3l_plugin.cli import main
from as3l_plugin.datasets import load_dataset

REPO = Path(__file__).resolve().parents[1]
B = 6


@pytest.fixture
def sel(tmp_path):
    """A digits selection of 6 images (pixel features), as `as3l select --dataset` writes it."""
    d = load_dataset("digits")
    f = tmp_path / "F.npy"
    np.save(f, d.x_train.reshape(len(d.x_train), -1).astype(np.float32))
    assert main(["select", "--features", str(f), "--budget", str(B), "--sampler", "random",
                 "--dataset", "digits", "--out", str(tmp_path / "sel")]) == 0
    idx = np.load(next((tmp_path / "sel").glob("lb_*_idx.npy")))
    return tmp_path, f, idx, d.y_train


def test_page_and_contact_sheet_are_self_contained(sel, capsys):
    tmp, f, idx, y = sel
    assert main(["annotate", str(tmp / "sel")]) == 0
    out = capsys.readouterr().out
    assert "annotate.html" in out and "as3l prior --features" in out
    html = (tmp / "sel" / "annotate.html").read_text()
    assert html.count("data:image/png;base64,") == B
    assert "http://" not in html and "https://" not in html  # nothing fetched from outside
    data = json.loads(re.search(r"const D = (\{.*?\});\n", html).group(1))
    assert [it["i"] for it in data["items"]] == idx.tolist()
    assert data["classes"] == [str(i) for i in range(10)] and data["token"] is None
    from PIL import Image
    sheet = Image.open(tmp / "sel" / "contact_sheet.png")
    assert sheet.size[0] > 6 * 96 and sheet.size[1] > 96


def test_reopened_page_shows_the_labels_already_given(sel):
    tmp, f, idx, y = sel
    (tmp / "sel" / "to_annotate.csv").write_text(
        "index,label,path\n" + f"{idx[1]},7,\n{idx[0]},skip,\n")
    ann = an.open_selection(tmp / "sel")
    assert ann.labels.tolist() == [SKIPPED, 7] + [UNLABELED] * (B - 2)
    data = json.loads(re.search(r"const D = (\{.*?\});\n", an.render_page(ann)).group(1))
    assert data["labels"][:3] == ["skip", "7", ""]


@pytest.mark.parametrize("text,expect", [
    ("index,label\n{0},Coat\n", r"to_annotate.csv:2: label: 'Coat' for sample \d+ is not a "
                                r"class name \(0, 1, 2"),
    ("index,label\n5000,1\n", r"to_annotate.csv:2: index: 5000 is out of range \[0, 1437\)"),
    ("index,label\n{0},1\n{1},1\n", r"to_annotate.csv:3: index: \d+ is not one of the 6 "
                                   r"selected samples"),
    ("index,label\n{0},1\n{0},2\n", r"to_annotate.csv:3: index: \d+ appears twice"),
])
def test_bad_csv_is_one_line_exit_2_and_writes_nothing(sel, capsys, text, expect):
    tmp, f, idx, y = sel
    csv = tmp / "sel" / "to_annotate.csv"
    other = int(np.setdiff1d(np.arange(1437), idx)[0])
    text = text.format(idx[0], other)
    csv.write_text(text)
    before = sorted(p.name for p in (tmp / "sel").iterdir())
    assert main(["annotate", str(tmp / "sel")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"as3l: error: {csv}") and err.count("\n") == 1, err
    assert re.search(expect, err), err
    assert sorted(p.name for p in (tmp / "sel").iterdir()) == before
    assert csv.read_text() == text


def _start_server(tmp):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "as3l_plugin", "annotate", str(tmp / "sel"),
                             "--serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"serving the page at (http://127\.0\.0\.1:\d+/)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def _post(url, body, token):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "X-AS3L-Token": token or ""})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_server_saves_each_label_and_rejects_bad_ones(sel):
    tmp, f, idx, y = sel
    proc, url = _start_server(tmp)
    try:
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        token = json.loads(re.search(r"const D = (\{.*?\});\n", page).group(1))["token"]
        assert _post(url + "label", {"index": int(idx[0]), "label": "3"}, "nope")[0] == 403
        req = urllib.request.Request(url, headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError, match="403"):  # DNS rebinding
            urllib.request.urlopen(req, timeout=10)
        code, js = _post(url + "label", {"index": int(idx[0]), "label": "3"}, token)
        assert code == 200 and js == {"labeled": 1, "skipped": 0, "total": B}
        lines = (tmp / "sel" / "to_annotate.csv").read_text().splitlines()
        assert lines[0] == "index,label,path" and lines[1] == f"{idx[0]},3,"
        code, js = _post(url + "label", {"index": 99999, "label": "3"}, token)
        assert code == 400 and "not one of the 6 selected" in js["error"]
        code, js = _post(url + "label", {"index": int(idx[1]), "label": "Coat"}, token)
        assert code == 400 and "not a class name" in js["error"]
        assert _post(url + "done", {}, token)[0] == 200
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "saved 1 / 6 labels" in out, out
    assert "127.0.0.1" in url


# --------------------------------------------------------------------------- real browser
def _chrome():
    """A headless Chromium driven by Selenium, or a skip naming what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium; .ci/setup does)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") \
        or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("chromium / chromedriver not found (apt-get install chromium "
                    "chromium-driver; .ci/setup does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1100,800"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _wait(cond, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


@pytest.mark.slow
def test_browser_labels_by_keyboard_and_click_undo_reload_done(sel, capsys):
    tmp, f, idx, y = sel
    browser = _chrome()
    proc, url = _start_server(tmp)
    csv = tmp / "sel" / "to_annotate.csv"

    def on_disk():
        return {int(r.split(",")[0]): r.split(",")[1]
                for r in csv.read_text().splitlines()[1:]}
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        browser.get(url)
        body = browser.find_element(By.TAG_NAME, "body")
        progress = lambda: browser.find_element(By.ID, "progress").text  # noqa: E731
        assert progress() == "0 / 6 labeled"
        truth = [str(int(y[i])) for i in idx]
        # the first three by keyboard (key 1 = class 0 ... key 0 = class 9)
        for k in range(3):
            body.send_keys(str((int(truth[k]) + 1) % 10))
        _wait(lambda: progress() == "3 / 6 labeled")
        # a wrong click on the 4th, undone, then the right class button
        browser.find_element(By.CSS_SELECTOR, f'#classes button[data-cls="{(int(truth[3]) + 1) % 10}"]').click()
        _wait(lambda: on_disk()[int(idx[3])] == str((int(truth[3]) + 1) % 10))
        browser.find_element(By.ID, "undo").click()
        _wait(lambda: on_disk()[int(idx[3])] == "" and progress() == "3 / 6 labeled")
        browser.find_element(By.CSS_SELECTOR, f'#classes button[data-cls="{truth[3]}"]').click()
        # the 5th marked skip / unsure, the 6th by clicking its card then a key
        browser.find_element(By.ID, "skip").click()
        _wait(lambda: on_disk()[int(idx[4])] == "skip")
        browser.find_elements(By.CSS_SELECTOR, ".card img")[5].click()  # click to enlarge
        _wait(lambda: browser.find_element(By.ID, "zoom").is_displayed())
        body.send_keys(str((int(truth[5]) + 1) % 10))                   # labels it there
        _wait(lambda: not browser.find_element(By.ID, "zoom").is_displayed())
        _wait(lambda: progress() == "5 / 6 labeled, 1 skipped")
        _wait(lambda: sum(v not in ("", "skip") for v in on_disk().values()) == 5)
        # closing / reloading the tab loses nothing
        browser.refresh()
        _wait(lambda: browser.find_element(By.ID, "progress").text == "5 / 6 labeled, 1 skipped")
        body = browser.find_element(By.TAG_NAME, "body")
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        assert "skip" in cards[4].get_attribute("class")
        cards[4].click()  # decide the unsure one after all (enlarged, then a key)
        body.send_keys(str((int(truth[4]) + 1) % 10), Keys.NULL)
        _wait(lambda: progress() == "6 / 6 labeled")
        _wait(lambda: on_disk()[int(idx[4])] == truth[4])
        if os.environ.get("AS3L_SCREENSHOT"):
            browser.save_screenshot(os.environ["AS3L_SCREENSHOT"])
        browser.find_element(By.ID, "done").click()
        _wait(lambda: "You can close this tab" in browser.find_element(By.TAG_NAME, "body").text)
        out, _ = proc.communicate(timeout=30)
    finally:
        browser.quit()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "saved 6 / 6 labels" in out and "next: as3l prior" in out, out
    assert on_disk() == {int(i): t for i, t in zip(idx, truth)}
    assert read_labels_csv(csv, idx, 10).tolist() == y[idx].tolist()
    capsys.readouterr()
    assert main(["prior", "--features", str(f), "--select-dir", str(tmp / "sel"),
                 "--num-classes", "10", "--out", str(tmp / "prior.npy")]) == 0
    assert np.load(tmp / "prior.npy")[idx].argmax(1).tolist() == y[idx].tolist()


@pytest.mark.slow
def test_browser_file_page_search_reopen_and_download(tmp_path):
    """The file:// page: more than 10 classes → a search box (Enter picks), clicks survive a
    reload (localStorage), and the download button saves a to_annotate.csv that reads back."""
    names = [f"class {chr(65 + c)}" for c in range(12)]
    rng = np.random.default_rng(0)
    idx = np.array([5, 17, 3], dtype=np.int64)
    ann = an.Annotation(tmp_path, idx, [rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
                                        for _ in idx], ["a/x.png", "b/y,z.png", "c.png"],
                        names, np.full(3, UNLABELED, dtype=np.int64))
    page = an.write_page(ann)
    browser = _chrome()
    dl = tmp_path / "downloads"
    dl.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(dl)})
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        browser.get(page.as_uri())
        progress = lambda: browser.find_element(By.ID, "progress").text  # noqa: E731
        assert progress() == "0 / 3 labeled"
        assert not browser.find_element(By.ID, "done").is_displayed()
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("2")                                   # key 2 = class B
        search = browser.find_element(By.ID, "search")
        search.send_keys("class L", Keys.ENTER)               # the 12th, beyond the keys
        _wait(lambda: progress() == "2 / 3 labeled")
        # Chromium hands localStorage writes to its storage process in batches (about a
        # second apart); a reload that comes sooner can open a renderer that misses them
        time.sleep(3)
        browser.refresh()
        _wait(lambda: browser.find_element(By.ID, "progress").text == "2 / 3 labeled")
        browser.find_element(By.TAG_NAME, "body").send_keys("s")
        _wait(lambda: progress() == "2 / 3 labeled, 1 skipped")
        browser.find_elements(By.CSS_SELECTOR, ".card .zoom")[1].click()  # enlarge
        _wait(lambda: browser.find_element(By.ID, "zoom").is_displayed())
        assert "index 17 · b/y,z.png" in browser.find_element(By.ID, "zoomcap").text
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        _wait(lambda: not browser.find_element(By.ID, "zoom").is_displayed())
        browser.find_element(By.ID, "download").click()
        got = _wait(lambda: (dl / "to_annotate.csv").is_file()
                    and (dl / "to_annotate.csv").read_text())
    finally:
        browser.quit()
    assert got.splitlines() == ["index,label,path", "5,class B,a/x.png",
                                '17,class L,"b/y,z.png"', "3,skip,c.png"]
    from as3l_plugin.annotations import read_annotations
    assert read_annotations(dl / "to_annotate.csv", idx, 12, class_names=names,
                            paths={5: "a/x.png", 17: "b/y,z.png", 3: "c.png"}).tolist() \
        == [1, 11, SKIPPED]


def test_annotate_needs_the_dataset_of_the_selection(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    np.save(tmp_path / "F.npy", X)
    assert main(["select", "--features", str(tmp_path / "F.npy"), "--budget", "5",
                 "--sampler", "random", "--out", str(tmp_path / "sel")]) == 0
    capsys.readouterr()
    assert main(["annotate", str(tmp_path / "sel")]) == 2
    assert "--dataset: the selection records no dataset; pass --dataset NAME" \
        in capsys.readouterr().err
    assert main(["annotate", str(tmp_path / "sel"), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert "the selection was made on 100 samples but dataset 'digits' has 1437" in err, err
    assert not (tmp_path / "sel" / "annotate.html").exists()
