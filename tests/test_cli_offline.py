import json
import os
import subprocess
import sys

import numpy as np
import pytest

from as3l_plugin import io
from as3l_plugin.annotations import read_labels_csv
from as3l_plugin.cli import main
from as3l_plugin.commands.offline import parse_param
from as3l_plugin.errors import LabelsError, ParameterError

B, SEED = 8, 3
LB = io.index_filename(B, SEED)
ULB = io.index_filename(B, SEED, prefix="ulb")


@pytest.fixture
def files(tmp_path, blobs):
    X, y = blobs
    f, lab = tmp_path / "X.npy", tmp_path / "y.npy"
    np.save(f, X)
    np.save(lab, y)
    return tmp_path, f, lab, X, y


def listing(d):
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def select(tmp, f, out="sel", *extra):
    return main(["select", "--features", str(f), "--budget", str(B), "--sampler", "random",
                 "--seed", str(SEED), "--out", str(tmp / out), *extra])


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")


def test_round_trip_human_csv(files, capsys):
    tmp, f, lab, X, y = files
    assert select(tmp, f) == 0
    sel = tmp / "sel"
    assert listing(sel) == sorted([LB, LB + ".json", ULB, "to_annotate.csv"])
    idx = np.load(sel / LB)
    assert idx.dtype == np.int64 and idx.shape == (B,) and np.unique(idx).size == B
    ulb = np.load(sel / ULB)
    assert np.array_equal(np.sort(np.r_[idx, ulb]), np.arange(len(X)))
    side = json.loads((sel / (LB + ".json")).read_text())
    assert side["sampler"] == "random" and side["budget"] == B and side["seed"] == SEED
    assert side["n"] == len(X) and side["features_sha256"] == io.sha256_array(X)
    assert side["package_version"] and side["labels_prefilled"] is False
    text = (sel / "to_annotate.csv").read_text().splitlines()
    assert text[0] == "index,label,path" and text[1:] == [f"{i},," for i in idx]
    assert "fill in the 'label' column" in capsys.readouterr().out

    # the human fills the CSV (in another order, with an extra column)
    lines = ["index,label,note"] + [f"{i},{y[i]},ok" for i in idx[::-1]]
    write_csv(sel / "to_annotate.csv", lines)
    assert main(["prior", "--features", str(f), "--select-dir", str(sel), "--num-classes", "4",
                 "--param", "ks=4,8", "--param", "backend=numpy",
                 "--out", str(tmp / "prior.npy")]) == 0
    P = np.load(tmp / "prior.npy")
    assert P.dtype == np.float32 and P.shape == (len(X), 4)
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-6)
    np.testing.assert_array_equal(P[idx].argmax(1), y[idx])
    meta = io.read_sidecar(tmp / "prior.npy")
    assert meta["num_classes"] == 4 and meta["budget"] == B and meta["seed"] == 0
    assert meta["propagator"] == "seeded_kmeans" and meta["params"]["ks"] == [4, 8]
    assert meta["features_sha256"] == io.sha256_array(X) and meta["labels_source"] == "csv"

    capsys.readouterr()
    assert main(["evaluate-prior", "--prior", str(tmp / "prior.npy"), "--labels", str(lab),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_evaluated"] == len(X) - B and res["excluded_from"]
    assert res["class_coverage"] == len(np.unique(y[idx]))
    assert 0 <= res["accuracy"] <= 1 and 0 <= res["ece"] <= 1
    assert main(["evaluate-prior", "--prior", str(tmp / "prior.npy"), "--labels", str(lab),
                 "--exclude", str(sel / LB)]) == 0
    assert "accuracy (unlabeled rows" in capsys.readouterr().out


def test_simulation_prefilled_csv_and_oracle_are_identical(files):
    tmp, f, lab, X, y = files
    assert select(tmp, f, "sel", "--labels", str(lab)) == 0
    sel = tmp / "sel"
    idx = np.load(sel / LB)
    assert read_labels_csv(sel / "to_annotate.csv", idx, 4).tolist() == y[idx].tolist()
    common = ["prior", "--features", str(f), "--select-dir", str(sel), "--num-classes", "4",
              "--propagator", "knn", "--seed", "1"]
    assert main(common + ["--out", str(tmp / "a.npy")]) == 0
    assert main(common + ["--oracle-labels", str(lab), "--out", str(tmp / "b.npy")]) == 0
    assert (tmp / "a.npy").read_bytes() == (tmp / "b.npy").read_bytes()


def test_outputs_byte_identical_per_seed(files):
    tmp, f, lab, X, y = files
    for out in ("s1", "s2"):
        assert select(tmp, f, out, "--labels", str(lab)) == 0
        assert main(["prior", "--features", str(f), "--select-dir", str(tmp / out),
                     "--num-classes", "4", "--param", "ks=4,8",
                     "--out", str(tmp / out / "prior.npy")]) == 0
    for name in (LB, ULB, "to_annotate.csv", "prior.npy"):
        assert (tmp / "s1" / name).read_bytes() == (tmp / "s2" / name).read_bytes(), name


def test_refuses_to_overwrite_filled_labels(files, capsys):
    tmp, f, lab, X, y = files
    assert select(tmp, f, "sel", "--labels", str(lab)) == 0
    before = (tmp / "sel" / "to_annotate.csv").read_bytes()
    assert select(tmp, f) == 2
    assert "already holds 8 label(s); pass --force" in capsys.readouterr().err
    assert (tmp / "sel" / "to_annotate.csv").read_bytes() == before
    assert select(tmp, f, "sel", "--force") == 0


# --------------------------------------------------------------------------- bad inputs
def test_select_nan_features(files, capsys):
    tmp, f, lab, X, y = files
    X = X.copy()
    X[7, 2] = np.nan
    np.save(f, X)
    assert select(tmp, f) == 2
    err = capsys.readouterr().err
    assert err.startswith("as3l: error: ") and str(f) in err and "NaN" in err and "[7]" in err
    assert listing(tmp / "sel") == [] and not (tmp / "sel").exists()


def test_select_budget_too_large(files, capsys):
    tmp, f, lab, X, y = files
    assert main(["select", "--features", str(f), "--budget", "401", "--sampler", "random",
                 "--out", str(tmp / "sel")]) == 2
    err = capsys.readouterr().err
    assert "--budget: budget=401 > 400 samples" in err
    assert not (tmp / "sel").exists()


def test_select_bad_param(files, capsys):
    tmp, f, lab, X, y = files
    assert select(tmp, f, "sel", "--param", "nonsense") == 2
    assert "--param" in capsys.readouterr().err
    assert not (tmp / "sel").exists()


@pytest.fixture
def selected(files):
    tmp, f, lab, X, y = files
    assert select(tmp, f) == 0
    idx = np.load(tmp / "sel" / LB)
    return tmp, f, lab, X, y, idx


def run_prior(tmp, f, csv, *extra):
    return main(["prior", "--features", str(f), "--select-dir", str(tmp / "sel"),
                 "--labels-csv", str(csv), "--num-classes", "4", *extra,
                 "--out", str(tmp / "prior.npy")])


@pytest.mark.parametrize("case,expect", [
    ("missing", r"to_annotate.csv: index: 1 selected sample\(s\) have no line"),
    ("duplicate", r"to_annotate.csv:3: index: \d+ appears twice \(lines 2 and 3\)"),
    ("out_of_range_class", r"to_annotate.csv:2: label: class id 9 .* out of range \[0, 4\)"),
    ("empty_label", r"to_annotate.csv:2: label: is empty"),
    ("not_int", r"to_annotate.csv:2: label: 'cat' for sample \d+ is not a class id in \[0, 4\) "
                r"and no class names are known"),
    ("skip", r"to_annotate.csv:2: label: sample \d+ is marked 'skip'"),
    ("not_selected", r"to_annotate.csv:2: index: \d+ is not one of the 8 selected"),
    ("index_out_of_range", r"to_annotate.csv:2: index: 400 is out of range \[0, 400\)"),
    ("no_header", r"to_annotate.csv:1: header: header .* lacks column"),
    ("semicolon", r"to_annotate.csv:1: header: .*';'"),
])
def test_prior_bad_labels_csv(selected, capsys, case, expect):
    tmp, f, lab, X, y, idx = selected
    rows = [f"{i},{y[i]}" for i in idx]
    other = int(np.setdiff1d(np.arange(400), idx)[0])
    lines = {
        "missing": ["index,label"] + rows[:-1],
        "duplicate": ["index,label", rows[0], rows[0]] + rows[1:],
        "out_of_range_class": ["index,label", f"{idx[0]},9"] + rows[1:],
        "empty_label": ["index,label", f"{idx[0]},"] + rows[1:],
        "not_int": ["index,label", f"{idx[0]},cat"] + rows[1:],
        "skip": ["index,label", f"{idx[0]},skip"] + rows[1:],
        "not_selected": ["index,label", f"{other},0"] + rows,
        "index_out_of_range": ["index,label", "400,0"] + rows,
        "no_header": rows,
        "semicolon": ["index;label"] + [r.replace(",", ";") for r in rows],
    }[case]
    csv = tmp / "sel" / "to_annotate.csv"
    write_csv(csv, lines)
    assert run_prior(tmp, f, csv) == 2
    err = capsys.readouterr().err
    assert err.startswith("as3l: error: " + str(csv)), err
    import re
    assert re.search(expect, err), err
    assert not (tmp / "prior.npy").exists() and not (tmp / "prior.npy.json").exists()


def test_prior_stale_features(selected, capsys):
    tmp, f, lab, X, y, idx = selected
    write_csv(tmp / "sel" / "to_annotate.csv",
              ["index,label"] + [f"{i},{y[i]}" for i in idx])
    np.save(f, X + 1)
    assert run_prior(tmp, f, tmp / "sel" / "to_annotate.csv") == 2
    err = capsys.readouterr().err
    assert "features_sha256" in err and "re-run `as3l select`" in err
    assert not (tmp / "prior.npy").exists()


def test_prior_needs_num_classes_with_csv(selected, capsys):
    tmp, f, lab, X, y, idx = selected
    assert main(["prior", "--features", str(f), "--select-dir", str(tmp / "sel"),
                 "--out", str(tmp / "prior.npy")]) == 2
    assert "--num-classes: is required" in capsys.readouterr().err


def test_prior_unknown_propagator(selected, capsys):
    tmp, f, lab, X, y, idx = selected
    assert run_prior(tmp, f, tmp / "sel" / "to_annotate.csv", "--propagator", "magic") == 2
    assert "known: knn, label_spreading, seeded_kmeans" in capsys.readouterr().err


def test_failed_write_leaves_nothing(files, monkeypatch):
    tmp, f, lab, X, y = files
    real = io.atomic_save_npy
    calls = []

    def flaky(path, arr):
        calls.append(path)
        if len(calls) == 2:  # the lb index, after ulb and the CSV were written
            raise io.OutputError("disk full", path=path)
        return real(path, arr)
    monkeypatch.setattr(io, "atomic_save_npy", flaky)
    assert select(tmp, f, "sel", "--labels", str(lab)) == 2
    assert not (tmp / "sel").exists()


# --------------------------------------------------------------------------- small pieces
def test_parse_param():
    assert parse_param("ks=10,20,30") == ("ks", (10, 20, 30))
    assert parse_param("alpha=0.5") == ("alpha", 0.5)
    assert parse_param("symmetric=false") == ("symmetric", False)
    assert parse_param("weights=uniform") == ("weights", "uniform")
    assert parse_param("n_jobs=none") == ("n_jobs", None)
    with pytest.raises(ParameterError):
        parse_param("k")


def test_read_labels_csv_accepts_bom_and_blank_lines(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes("\ufeffindex,label\r\n5,1\r\n\r\n2, 0 \r\n".encode())
    assert read_labels_csv(p, [2, 5], 2).tolist() == [0, 1]
    with pytest.raises(LabelsError, match="not found"):
        read_labels_csv(tmp_path / "nope.csv", [2], 2)


@pytest.mark.slow
def test_offline_cli_imports_stay_light():
    code = ("import sys, argparse, as3l_plugin.commands.offline as o; "
            "o.register(argparse.ArgumentParser().add_subparsers()); "
            "heavy = [m for m in ('torch', 'sklearn', 'semilearn', 'scipy') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    out = capsys.readouterr().out
    assert "--budget" in out and "to_annotate.csv" in out


def test_labels_by_class_name_id_and_path(tmp_path):
    """A label cell holds an id or a class name (exact, then case-insensitive); a path cell
    must match the sample's path; 'skip' reads as SKIPPED in a partial read."""
    from as3l_plugin.annotations import SKIPPED, UNLABELED, read_annotations
    from as3l_plugin.datasets import class_names
    names = class_names("fashion_mnist")
    assert names[0] == "T-shirt/top" and names[9] == "Ankle boot" and len(names) == 10
    assert class_names("digits") == [str(i) for i in range(10)]
    p = tmp_path / "a.csv"
    write_csv(p, ["index,label,path", "5,Coat,b.png", "2,0,a.png", "7,ankle boot,"])
    paths = {2: "a.png", 5: "b.png", 7: "c.png"}
    assert read_labels_csv(p, [2, 5, 7], 10, class_names=names, paths=paths).tolist() == [0, 4, 9]
    write_csv(p, ["index,label,path", "5,Coat,x.png"])
    with pytest.raises(LabelsError, match=r"a.csv:2: path: 'x.png' is not the path of sample 5"):
        read_annotations(p, [2, 5], 10, class_names=names, paths=paths)
    write_csv(p, ["index,label", "5,skip", "2,Cot"])
    with pytest.raises(LabelsError, match=r"a.csv:3: label: 'Cot' for sample 2 is not a class "
                                          r"name \(T-shirt/top, Trouser"):
        read_annotations(p, [2, 5, 7], 10, class_names=names)
    write_csv(p, ["index,label", "5,skip", "2,Coat"])
    got = read_annotations(p, [2, 5, 7], 10, class_names=lambda: names)
    assert got.tolist() == [4, SKIPPED, UNLABELED]


def test_prior_reads_class_names_of_the_dataset(files, capsys):
    tmp, f, lab, X, y = files
    assert select(tmp, f, "sel", "--dataset", "fashion_mnist") == 0
    idx = np.load(tmp / "sel" / LB)
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress"]
    write_csv(tmp / "sel" / "to_annotate.csv",
              ["index,label,path"] + [f"{i},{names[y[i]]}," for i in idx])
    capsys.readouterr()
    assert main(["prior", "--features", str(f), "--select-dir", str(tmp / "sel"),
                 "--num-classes", "4", "--out", str(tmp / "p.npy")]) == 0
    out = capsys.readouterr().out
    assert "labeled per class: T-shirt/top" in out, out
    meta = io.read_sidecar(tmp / "p.npy")
    assert meta["labeled_per_class"] == np.bincount(y[idx], minlength=4).tolist()
    write_csv(tmp / "sel" / "to_annotate.csv",
              ["index,label"] + [f"{i},Sneakers" for i in idx])
    assert main(["prior", "--features", str(f), "--select-dir", str(tmp / "sel"),
                 "--num-classes", "4", "--out", str(tmp / "q.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'Sneakers'" in err and "not a class name" in err, err
    assert not (tmp / "q.npy").exists()
