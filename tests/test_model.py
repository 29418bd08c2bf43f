"""The Keras model builder and its export: the contract abcgen.step relies on."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from abcgen.model import FORMAT_VERSION, build_text_model, export_npz, export_weights
from abcgen.step import load_npz

VOCAB, EMBED, HIDDEN = 20, 8, 16


@pytest.fixture(scope="module")
def model2():
    keras.utils.set_random_seed(1)
    return build_text_model(VOCAB, embed_dim=EMBED, hidden=HIDDEN, layers=2, dropout=0.1)


def test_output_is_logits_per_position(model2):
    x = np.random.default_rng(0).integers(0, VOCAB, (3, 7))
    y = np.asarray(model2(x, training=False))
    assert y.shape == (3, 7, VOCAB)
    # Logits, not probabilities: rows need not sum to 1 and may be negative.
    assert model2.get_layer("logits").get_config()["activation"] == "linear"
    assert not np.allclose(y.sum(-1), 1.0)


def test_variable_sequence_length(model2):
    assert model2.input_shape == (None, None)
    assert np.asarray(model2(np.zeros((1, 3), "int32"))).shape == (1, 3, VOCAB)


def test_layer_names(model2):
    names = [layer.name for layer in model2.layers]
    assert names == ["tokens", "embedding", "lstm_0", "lstm_1", "dropout", "logits"]
    assert model2.get_layer("embedding").output_dim == EMBED
    assert model2.get_layer("embedding").input_dim == VOCAB


@pytest.mark.parametrize("name", ["lstm_0", "lstm_1"])
def test_lstm_keeps_cudnn_compatible_settings(model2, name):
    cfg = model2.get_layer(name).get_config()
    assert cfg["units"] == HIDDEN
    assert cfg["activation"] == "tanh"
    assert cfg["recurrent_activation"] == "sigmoid"
    assert cfg["recurrent_dropout"] == 0
    assert cfg["unroll"] is False
    assert cfg["use_bias"] is True
    assert cfg["return_sequences"] is True
    assert cfg["stateful"] is False


def test_dropout_rate(model2):
    assert model2.get_layer("dropout").rate == pytest.approx(0.1)


def test_stateful_needs_fixed_batch():
    with pytest.raises(ValueError, match="batch_size"):
        build_text_model(VOCAB, embed_dim=EMBED, hidden=HIDDEN, stateful=True)
    m = build_text_model(VOCAB, embed_dim=EMBED, hidden=HIDDEN, stateful=True, batch_size=4)
    assert m.input_shape == (4, None)
    assert m.get_layer("lstm_0").get_config()["stateful"] is True


@pytest.mark.parametrize("kwargs", [dict(vocab_size=0), dict(layers=0), dict(hidden=0),
                                    dict(dropout=1.0)])
def test_bad_arguments(kwargs):
    args = dict(vocab_size=VOCAB, embed_dim=EMBED, hidden=HIDDEN) | kwargs
    with pytest.raises(ValueError):
        build_text_model(args.pop("vocab_size"), **args)


def test_export_weights_names_and_shapes(model2):
    w = export_weights(model2)
    expected = {
        "embedding": (VOCAB, EMBED),
        "lstm_0/kernel": (EMBED, 4 * HIDDEN),
        "lstm_0/recurrent_kernel": (HIDDEN, 4 * HIDDEN),
        "lstm_0/bias": (4 * HIDDEN,),
        "lstm_1/kernel": (HIDDEN, 4 * HIDDEN),
        "lstm_1/recurrent_kernel": (HIDDEN, 4 * HIDDEN),
        "lstm_1/bias": (4 * HIDDEN,),
        "logits/kernel": (HIDDEN, VOCAB),
        "logits/bias": (VOCAB,),
    }
    assert {k: v.shape for k, v in w.items()} == expected
    assert all(type(v) is np.ndarray for v in w.values())
    np.testing.assert_array_equal(w["lstm_1/bias"],
                                  np.asarray(model2.get_layer("lstm_1").cell.bias))


def test_export_npz_round_trip_float32(model2, tmp_path):
    path = tmp_path / "m.npz"
    meta = {"tags": ["a", "b", "ü"], "epochs": 3}
    export_npz(model2, path, meta, dtype="float32")

    # Readable without pickle, and the meta is bytes rather than an object.
    with np.load(path, allow_pickle=False) as raw:
        assert raw["__meta__"].dtype == np.uint8
        stored = json.loads(raw["__meta__"].tobytes().decode("utf-8"))
        assert raw["lstm_0/kernel"].dtype == np.float32

    weights, loaded_meta = load_npz(path)
    assert loaded_meta == stored
    assert loaded_meta["tags"] == ["a", "b", "ü"] and loaded_meta["epochs"] == 3
    assert loaded_meta["format_version"] == FORMAT_VERSION
    assert (loaded_meta["layers"], loaded_meta["hidden"], loaded_meta["embed_dim"],
            loaded_meta["vocab_size"], loaded_meta["dtype"]) == (2, HIDDEN, EMBED, VOCAB,
                                                                 "float32")
    original = export_weights(model2)
    assert weights.keys() == original.keys()
    for name, arr in original.items():
        assert weights[name].dtype == np.float32
        np.testing.assert_array_equal(weights[name], arr)
    assert meta == {"tags": ["a", "b", "ü"], "epochs": 3}, "caller's meta was modified"


def test_export_npz_float16(model2, tmp_path):
    path = tmp_path / "m16.npz"
    export_npz(model2, path, {})
    with np.load(path, allow_pickle=False) as raw:
        assert raw["embedding"].dtype == np.float16
    weights, meta = load_npz(path)
    assert meta["dtype"] == "float16"
    assert weights["embedding"].dtype == np.float32
    np.testing.assert_allclose(weights["lstm_0/kernel"],
                               export_weights(model2)["lstm_0/kernel"], atol=1e-3)


def test_export_npz_replaces_atomically(model2, tmp_path):
    path = tmp_path / "sub" / "m.npz"
    export_npz(model2, path, {"run": 1}, dtype="float32")
    export_npz(model2, path, {"run": 2}, dtype="float32")
    assert load_npz(path)[1]["run"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.npz"], "temp file left"


def test_export_npz_bad_dtype_leaves_nothing(model2, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        export_npz(model2, tmp_path / "m.npz", {}, dtype="int8")
    assert list(tmp_path.iterdir()) == []
