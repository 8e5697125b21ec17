"""`fewshot-metric register / query / store` and the quickstart demo, end to end."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from fewshot_metric import FewShotClassifier
from fewshot_metric.classifier import list_images
from fewshot_metric.cli import main
from fewshot_metric.demo import main as demo_main
from fewshot_metric.store import PrototypeStore, flat_kernel


def files(glyph_images: Path, name: str) -> list[str]:
    return [str(p) for p in sorted((glyph_images / name).glob("*.png"))]


def test_register_query_and_edit_a_store(tiny_checkpoint: Path, glyph_images: Path,
                                         tmp_path: Path, capsys) -> None:
    store = str(tmp_path / "store")
    register = ["register", "--store", store, "--quiet"]
    assert main([*register, "--checkpoint", str(tiny_checkpoint), "--label", "first glyph",
                 *files(glyph_images, "glyph00800")[:3]]) == 0
    assert "first glyph: 3 shots" in capsys.readouterr().out
    assert main([*register, "--folder", str(glyph_images)]) == 0  # checkpoint from the store
    out = capsys.readouterr().out
    assert "glyph00803: 6 shots" in out and f"store {store}: 5 classes" in out

    assert main(["query", "--store", store, str(glyph_images / "glyph00801"), "--k", "2",
                 "--json", "--quiet"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = FewShotClassifier.load(store).query(list_images([glyph_images / "glyph00801"]),
                                                   k=2)
    assert answers == [p.to_dict() for p in expected]
    assert main(["query", "--store", store, str(glyph_images / "glyph00801"), "--k", "2",
                 "--json", "--quiet", "--mmap"]) == 0  # served from the files: same answers
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == answers

    assert main(["query", "--store", store, files(glyph_images, "glyph00802")[0], "--k", "3",
                 "--quiet"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "top", "classes", "(score)"] and len(table) == 2
    assert table[1].startswith(files(glyph_images, "glyph00802")[0])
    assert table[1].count("(0.") + table[1].count("(1.") == 3

    assert main(["store", "rename", store, "first glyph", "premier glyphe"]) == 0
    assert main(["store", "remove", store, "glyph00803"]) == 0
    assert main(["store", "info", store]) == 0  # flat: says what searches it
    reason = flat_kernel.unavailable_reason()
    screening = "int8 screening" if flat_kernel.screens() else "float32 only: no AVX512-VNNI"
    assert (f"exact search: FAISS ({reason})" if reason else
            f"exact search: fused AVX-512 kernel for 64+ queries ({screening})"
            ) in capsys.readouterr().out
    assert main(["store", "index", store, "hnsw", "--option", "efSearch=32"]) == 0
    capsys.readouterr()
    assert main(["store", "info", store]) == 0
    info = capsys.readouterr().out
    assert "classes:      4 (21 shots)" in info and "premier glyphe: 3 shots" in info
    assert "hnsw" in info and str(tiny_checkpoint.resolve()) in info
    assert "exact search" not in info
    assert PrototypeStore.load(store).index_options["efSearch"] == 32


def test_cli_errors_name_the_input_and_leave_the_store(tiny_checkpoint: Path,
                                                       glyph_images: Path, tmp_path: Path,
                                                       capsys) -> None:
    store = tmp_path / "store"
    assert main(["register", "--store", str(store), "--label", "a", "--quiet",
                 *files(glyph_images, "glyph00800")]) == 2
    assert "pass --checkpoint" in capsys.readouterr().err
    assert main(["register", "--store", str(store), "--checkpoint", str(tiny_checkpoint),
                 "--folder", str(glyph_images), "--quiet"]) == 0
    before = (store / "store.json").read_bytes()

    bad = tmp_path / "bad.png"
    bad.write_text("text, not pixels")
    cases = [
        (["register", "--store", str(store), "--label", "b", "--quiet",
          files(glyph_images, "glyph00801")[0], str(bad)], r"bad\.png"),
        (["register", "--store", str(store), "--label", "b", "--quiet",
          str(tmp_path / "missing.png")], r"missing\.png"),
        (["register", "--store", str(store), "--mode", "instance", "--label", "b", "--quiet",
          str(bad)], "only applies to a new store"),
        (["query", "--store", str(store), str(tmp_path / "missing.png")], r"missing\.png"),
        (["query", "--store", str(store), str(glyph_images), "--k", "0"], "k must be"),
        (["store", "remove", str(store), "glyph00800", "no such class"], "no such class"),
        (["store", "rename", str(store), "glyph00800", "glyph00801"], "already exists"),
        (["store", "index", str(store), "ivf_flat", "--option", "nprobe"], "NAME=INTEGER"),
        (["query", "--store", str(tmp_path / "nowhere"), str(bad)], "no store at"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"fewshot-metric {args[0]}: error:"), err
        assert re.search(message, err), (args, err)
    assert (store / "store.json").read_bytes() == before


def test_demo_registers_unseen_classes_and_reports_accuracy(tiny_checkpoint: Path,
                                                            tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert demo_main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--classes", "6",
                      "--shots", "2", "--queries", "3", "--examples", "2"]) == 0
    text = capsys.readouterr().out
    assert f"store {out / 'store'}: 6 classes" in text
    assert "over 18 query images, 6-way, 2 shots per class" in text
    assert text.count(str(out / "query")) >= 2  # the example table's rows
    assert len(list((out / "register").rglob("*.png"))) == 12
    assert PrototypeStore.load(out / "store").counts == {
        name: 2 for name in sorted(p.name for p in (out / "register").iterdir())}
    shutil.rmtree(out)
