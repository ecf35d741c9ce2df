"""What a repository offers, read from its listing: GGUF quantisations (split ones too) with the one this
machine suits, a sentence-transformers folder without other runtimes' copies, repository ids as typed."""

from __future__ import annotations

import pytest

from server.gpu import GIB, Device, Hardware
from server.hub.errors import HubError
from server.hub.listing import RepoFile, RepoListing, parse_repo_id
from server.hub.quants import choose, quants, recommend

GB = 1000**3
QWEN = RepoListing(
    "Qwen/Qwen3-30B-A3B-GGUF",
    "a" * 40,
    False,
    (
        RepoFile(".gitattributes", 1_600, blob_id="b" * 40),
        RepoFile("README.md", 12_000, blob_id="c" * 40),
        RepoFile("Qwen3-30B-A3B-Q8_0.gguf", int(32.5 * GB), sha256="1" * 64),
        RepoFile("Qwen3-30B-A3B-Q4_K_M.gguf", int(18.6 * GB), sha256="2" * 64),
        RepoFile("Qwen3-30B-A3B-Q5_K_M.gguf", int(21.7 * GB), sha256="3" * 64),
        RepoFile("Qwen3-30B-A3B-Q6_K.gguf", int(25.1 * GB), sha256="4" * 64),
        RepoFile("BF16/Qwen3-30B-A3B-BF16-00002-of-00002.gguf", int(21 * GB), sha256="5" * 64),
        RepoFile("BF16/Qwen3-30B-A3B-BF16-00001-of-00002.gguf", int(40 * GB), sha256="6" * 64),
        RepoFile("mmproj-Qwen3-F16.gguf", int(0.6 * GB), sha256="7" * 64),
    ),
)


def machine(gpu_free: int | None = None, ram: int = 64 * GIB, offload: bool = True) -> Hardware:
    devices = (Device("GPU", gpu_free, gpu_free),) if gpu_free is not None else ()
    return Hardware(offload, gpu_free is not None, devices, ram, ram, ())


def test_quantisations_are_listed_smallest_first_with_split_models_as_one() -> None:
    found = quants(QWEN)
    assert [q.label for q in found] == ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "BF16"]
    bf16 = found[-1]
    assert [f.path for f in bf16.files] == [
        "BF16/Qwen3-30B-A3B-BF16-00001-of-00002.gguf",
        "BF16/Qwen3-30B-A3B-BF16-00002-of-00002.gguf",
    ]
    assert bf16.first.path.endswith("00001-of-00002.gguf") and bf16.size == int(61 * GB)
    assert choose(found, "q4_k_m").label == "Q4_K_M"
    assert choose(found, "Qwen3-30B-A3B-Q6_K.gguf").label == "Q6_K"
    with pytest.raises(HubError, match="it has: Q4_K_M, Q5_K_M, Q6_K, Q8_0, BF16"):
        choose(found, "Q2_K")


def test_labels_are_read_from_the_usual_ways_of_naming_a_file() -> None:
    names = ["SmolLM2-135M-Instruct.Q4_1.gguf", "model-iq4_xs.gguf", "m_F16.gguf", "plain.gguf"]
    listing = RepoListing("a/b", "c" * 40, False, tuple(RepoFile(n, i + 1) for i, n in enumerate(names)))
    assert [q.label for q in quants(listing)] == ["Q4_1", "IQ4_XS", "F16", "plain"]


@pytest.mark.parametrize(
    ("hardware", "label", "words"),
    [
        (machine(gpu_free=24 * GIB), "Q5_K_M", "24.0 GiB of GPU memory free"),
        (machine(gpu_free=48 * GIB), "Q8_0", "48.0 GiB of GPU memory free"),  # never the unquantised BF16
        (machine(gpu_free=48 * GIB, offload=False, ram=30 * GIB), "Q6_K", "30.0 GiB of RAM available"),
        (machine(gpu_free=8 * GIB), "Q4_K_M", "none fits in 8.0 GiB"),
        (None, "Q4_K_M", "the usual balance"),
    ],
)
def test_the_recommendation_is_the_largest_that_fits_where_llama_cpp_keeps_it(
    hardware: Hardware | None, label: str, words: str
) -> None:
    advice = recommend(quants(QWEN), hardware)
    assert advice.quant is not None and advice.quant.label == label
    assert words in advice.reason


def test_a_sentence_transformers_folder_leaves_out_what_other_runtimes_read() -> None:
    paths = [
        "modules.json",
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "onnx/model.onnx",
        "openvino/openvino_model.xml",
        "tf_model.h5",
        "rust_model.ot",
        "1_Pooling/config.json",
        "2_Dense/pytorch_model.bin",
        ".gitattributes",
    ]
    listing = RepoListing("a/b", "c" * 40, False, tuple(RepoFile(p, 1) for p in paths))
    assert listing.kind == "sentence-transformers"
    assert [f.path for f in listing.directory_files()] == [
        "modules.json",
        "config.json",
        "model.safetensors",
        "1_Pooling/config.json",
        "2_Dense/pytorch_model.bin",  # the only weights of that module
    ]


def test_a_repository_is_named_by_its_id_or_its_page() -> None:
    assert parse_repo_id(" Qwen/Qwen3-30B-A3B-GGUF ") == "Qwen/Qwen3-30B-A3B-GGUF"
    assert (
        parse_repo_id("https://huggingface.co/google/embeddinggemma-300m/tree/main")
        == "google/embeddinggemma-300m"
    )
    for bad in ("", "a/b/c", "../etc", "a b/c", "https://huggingface.co/"):
        with pytest.raises(HubError, match="not a Hugging Face repository id"):
            parse_repo_id(bad)
