"""The tokenizer files an export puts next to config.json (docs/FORMAT.md, "Tokenizer").

read_tokenizer_files(src_dir, vocab_size) reads and checks a checkpoint's tokenizer before
anything is written; write_model (model_writer.py) writes the files just before config.json.
"""

from __future__ import annotations

import os

from fastattention.tokenizer import TOKENIZER_FILE, TOKENIZER_FILES, Tokenizer


def read_tokenizer_files(src_dir: str, vocab_size: int) -> dict:
    """{file name: text} of the tokenizer files in src_dir ({} without a tokenizer.json), after
    loading the tokenizer and checking that its ids fit vocab_size (TokenizerError, a
    ValueError naming the file, otherwise)."""
    if not os.path.isfile(os.path.join(src_dir, TOKENIZER_FILE)):
        return {}
    Tokenizer.from_dir(src_dir).check_vocab(vocab_size)
    files = {}
    for name in TOKENIZER_FILES:
        path = os.path.join(src_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                files[name] = f.read()
    return files


def remove_stale(out_dir: str) -> None:
    """Removes tokenizer files an earlier export left in out_dir."""
    for name in TOKENIZER_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isfile(path):
            os.remove(path)


def write_files(out_dir: str, files: dict) -> None:
    """Writes {file name: text} into out_dir (each through a temporary name)."""
    os.makedirs(out_dir, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(out_dir, name)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
