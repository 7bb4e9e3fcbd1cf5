#!/usr/bin/env python3
"""Keeps the code in docs/receiving.md identical to the files CI runs.

In the doc, a snippet is a fenced block between marker comments naming its file (relative
to the repository root):

    <!-- snippet: docs/receiving/verify_standard.py -->
    ...anything; replaced by the file in a fenced block...
    <!-- /snippet -->

    python3 docs/receiving/sync_snippets.py          # rewrite the doc from the files
    python3 docs/receiving/sync_snippets.py --check  # exit 1 if the doc is out of date
"""

import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "receiving.md"

LANGUAGES = {
    ".py": "python",
    ".mjs": "javascript",
    ".js": "javascript",
    ".ts": "typescript",
    ".go": "go",
    ".java": "java",
    ".rs": "rust",
    ".sh": "bash",
    ".toml": "toml",
}

BLOCK = re.compile(
    r"(?P<open><!-- snippet: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(?P<close><!-- /snippet -->)",
    re.DOTALL,
)


def fenced(path: str) -> str:
    file = ROOT / path
    if not file.is_file():
        raise SystemExit(f"{DOC.relative_to(ROOT)}: snippet file {path} does not exist")
    code = file.read_text(encoding="utf-8")
    if not code.endswith("\n"):
        code += "\n"
    fence = "```"
    while fence in code:
        fence += "`"
    return f"{fence}{LANGUAGES.get(file.suffix, '')}\n{code}{fence}\n"


def render(doc: str) -> str:
    return BLOCK.sub(lambda m: m["open"] + fenced(m["path"]) + m["close"], doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the doc is out of date")
    args = parser.parse_args()
    current = DOC.read_text(encoding="utf-8")
    if current.count("<!-- snippet: ") != len(BLOCK.findall(current)):
        print(f"{DOC.relative_to(ROOT)}: a snippet marker has no <!-- /snippet -->", file=sys.stderr)
        return 1
    wanted = render(current)
    if args.check:
        if wanted != current:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                "docs/receiving.md",
                "docs/receiving.md (from the snippet files)",
            )
            sys.stderr.writelines(diff)
            print(
                "docs/receiving.md is out of date with docs/receiving/: "
                "run python3 docs/receiving/sync_snippets.py",
                file=sys.stderr,
            )
            return 1
        print(f"docs/receiving.md is in sync with its {len(BLOCK.findall(current))} snippets")
        return 0
    if wanted != current:
        DOC.write_text(wanted, encoding="utf-8")
        print("docs/receiving.md updated")
    else:
        print("docs/receiving.md already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
