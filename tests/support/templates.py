"""Real chat templates as test data, taken at set-up time from a package on PyPI (never kept in the repository).

Qwen3's chat template renders tools and switches thinking; llama.cpp keeps a copy among its test templates,
which the llama-cpp-python source package pinned in ``packaging/lock/app.txt`` carries. Run as a script
(``tests/clients/setup.sh`` does, so ``make test`` does), it downloads that source package through pip,
checks it against the lock file's hashes (``packaging/llama_build.py``), and writes the template with a
README naming its source and licence into ``tests/.envs/templates/``. Tests find it at ``QWEN3``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "tests" / ".envs" / "templates"
QWEN3 = FOLDER / "Qwen-Qwen3-0.6B.jinja"
MEMBER = "vendor/llama.cpp/models/templates/Qwen-Qwen3-0.6B.jinja"
LOCK = ROOT / "packaging" / "lock" / "app.txt"
SETUP_HINT = "the real chat templates are missing: run `make test-clients` (bash tests/clients/setup.sh)"

README = """# Chat templates for the tests

Taken by `tests/support/templates.py` at set-up time; not part of the repository.

`Qwen-Qwen3-0.6B.jinja` (sha256 {digest})
- Source: {sdist} from PyPI (sha256 checked against `packaging/lock/app.txt`), file `{member}`:
  llama.cpp's copy of the chat template of Qwen3 (https://huggingface.co/Qwen/Qwen3-0.6B).
- Licence: Apache-2.0, copyright the Qwen team (Alibaba Cloud), as the Qwen3 model and its tokenizer
  configuration are published (https://www.apache.org/licenses/LICENSE-2.0); llama.cpp itself is MIT.
"""


def _llama_build() -> Any:
    spec = importlib.util.spec_from_file_location("aisp_llama_build", ROOT / "packaging" / "llama_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fetch() -> bool:
    """Write the template and its README unless they are there for the locked version; True if written."""
    build = _llama_build()
    version, hashes = build.locked(LOCK)
    sdist = f"{build.PACKAGE}=={version}"
    readme = FOLDER / "README.md"
    if QWEN3.is_file() and readme.is_file() and sdist in readme.read_text(encoding="utf-8"):
        return False
    with tempfile.TemporaryDirectory(prefix="aisp-templates-") as work:
        source = build.download_source(version, hashes, Path(work))
        with tarfile.open(source) as archive:
            wanted = [m for m in archive.getmembers() if m.name.split("/", 1)[-1] == MEMBER and m.isfile()]
            assert len(wanted) == 1, f"{source.name} holds no {MEMBER}"
            handle = archive.extractfile(wanted[0])
            assert handle is not None
            data = handle.read()
    FOLDER.mkdir(parents=True, exist_ok=True)
    QWEN3.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    readme.write_text(README.format(digest=digest, sdist=sdist, member=MEMBER), encoding="utf-8")
    return True


if __name__ == "__main__":
    if fetch():
        sys.stdout.write(
            f"setup.sh: took {QWEN3.name} from the locked llama-cpp-python into tests/.envs/templates\n"
        )
    sys.exit(0)
