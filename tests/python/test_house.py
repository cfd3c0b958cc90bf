"""The house rules, kept as tests so that what one change cleaned up stays clean after the next:
no import circle between the files of a crate, no function over 80 lines without a stated
reason, no `Result<_, String>`, a doc comment at the top of every module, `shared/` below the
services (no crate there depends on a service or on test tooling), a short README, and every
relative link in README.md and docs/ resolving to a file and heading that exist.

These read the sources as text (brace matching, no Rust parser): a rule broken in a way the
reading cannot see is possible, one reported where there is none should not be."""

import os
import re
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIMIT = 80
README_LINES = 320


def crates():
    """Every workspace member: (its directory, its package name)."""
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    out = []
    for m in members:
        with open(os.path.join(ROOT, m, "Cargo.toml"), "rb") as f:
            out.append((m, tomllib.load(f)["package"]["name"]))
    return out


def sources(crate_dir):
    """The crate's library and binary sources (src/**.rs)."""
    src = os.path.join(ROOT, crate_dir, "src")
    for d, _, files in os.walk(src):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def non_test(text):
    """The text up to the file's first `#[cfg(test)]` (test modules sit at the end; a test-only
    file opens with `#![cfg(test)]`)."""
    cut = re.search(r"^\s*#!?\[cfg\(test\)\]", text, re.M)
    return text[: cut.start()] if cut else text


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


# ---- import circles -------------------------------------------------------------------------


def module_of(src_dir, path):
    """`src/routes/health.rs` → ("routes", "health"); lib.rs/main.rs/mod.rs name their folder."""
    rel = os.path.relpath(path, src_dir)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return tuple(rel)


def expand_use(tree):
    """`crate::{a, b::{c, d}}` → ["crate::a", "crate::b::c", "crate::b::d"]."""
    tree = re.sub(r"\s+", "", tree)
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner, rest = tree[:start], tree[start + 1 : i], tree[i + 1 :]
                parts, d, cur = [], 0, ""
                for c in inner:
                    if c == "," and d == 0:
                        parts.append(cur)
                        cur = ""
                        continue
                    d += c == "{"
                    d -= c == "}"
                    cur += c
                parts.append(cur)
                out = []
                for p in parts:
                    if p:
                        out.extend(expand_use(prefix + p + rest))
                return out
    return [tree]


def references(text):
    """Every path that starts at `crate::` or `super::` in the file's non-test code."""
    code = strip_comments(non_test(text))
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(p for p in expand_use(m.group(1)) if p.startswith(("crate::", "super::")))
    paths.extend(m.group(0) for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", code))
    return paths


def resolve(path, here, modules):
    """The module a path lands in (the longest known prefix of it)."""
    segs = path.split("::")
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    else:
        base = here
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    best = base
    for i in range(1, len(segs) + 1):
        cand = base + tuple(segs[:i])
        if cand in modules:
            best = cand
    return best


def cycles_of(crate_dir):
    src = os.path.join(ROOT, crate_dir, "src")
    files = {module_of(src, p): p for p in sources(crate_dir)}
    edges = {m: set() for m in files}
    for mod, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for ref in references(text):
            to = resolve(ref, mod, files)
            # A module and its ancestors are one family: a folder's mod.rs wires its children
            # and lends them helpers; only edges between unrelated modules can make a circle.
            if to == mod or mod[: len(to)] == to or to[: len(mod)] == mod:
                continue
            edges[mod].add(to)
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    return ["  →  ".join("::".join(x) or "crate" for x in c) for c in found]


@pytest.mark.parametrize("crate_dir", [c for c, _ in crates()])
def test_no_import_circle_between_the_files_of_a_crate(crate_dir):
    assert cycles_of(crate_dir) == []


def test_the_circle_finder_sees_a_circle():
    here = ("routes", "chat")
    mods = {(), ("routes",), ("routes", "chat"), ("routes", "templates"), ("observe",)}
    assert resolve("super::templates::render", here, mods) == ("routes", "templates")
    assert resolve("crate::observe::client_trace", here, mods) == ("observe",)
    assert expand_use("crate::{a, b::{c, d}}") == ["crate::a", "crate::b::c", "crate::b::d"]


# ---- functions, errors, doc comments ----------------------------------------------------------


def all_sources():
    for crate_dir, _ in crates():
        yield from sources(crate_dir)


def long_functions(path):
    """(name, line, length) of each non-test fn over LIMIT lines without a `// Long: why`
    comment on the lines just above it (among its doc comments and attributes)."""
    with open(path, encoding="utf-8") as f:
        lines = non_test(f.read()).split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?fn\s+(\w+)", lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = re.sub(r"//.*", "", lines[j])
            code = re.sub(r"'(\\.|[^'\\])'", "", re.sub(r'"(\\.|[^"\\])*"', '""', code))
            depth += code.count("{") - code.count("}")
            started = started or "{" in code
            if started and depth <= 0:
                break
            if not started and code.rstrip().endswith(";"):
                break
            j += 1
        above, k = [], i - 1
        while k >= 0 and lines[k].strip().startswith(("//", "#[")):
            above.append(lines[k])
            k -= 1
        reason = any(re.match(r"\s*// Long:", a) for a in above)
        if started and j - i + 1 > LIMIT and not reason:
            out.append((m.group(5), i + 1, j - i + 1))
        i = j + 1 if started else i + 1
    return out


def test_no_function_over_80_lines_without_a_stated_reason():
    found = []
    for path in all_sources():
        for name, line, n in long_functions(path):
            found.append(f"{os.path.relpath(path, ROOT)}:{line} {name} ({n} lines)")
    assert found == []


def test_no_result_with_a_string_error():
    found = []
    for path in all_sources():
        with open(path, encoding="utf-8") as f:
            code = strip_comments(non_test(f.read()))
        found.extend(f"{os.path.relpath(path, ROOT)}: {r}" for r in string_results(code))
    assert found == []


def string_results(code):
    """Each `Result<T, E>` in `code` whose E is a string."""
    out = []
    for m in re.finditer(r"\bResult<", code):
        depth, comma = 1, None
        for i in range(m.end(), len(code)):
            ch = code[i]
            if ch in "<([":
                depth += 1
            elif ch in ">)]" and code[i - 1] != "-":
                depth -= 1
                if depth == 0:
                    if comma is not None and re.fullmatch(r"\s*(String|&('static\s+)?str)\s*", code[comma + 1 : i]):
                        out.append(code[m.start() : i + 1])
                    break
            elif ch == "," and depth == 1:
                comma = i
    return out


def test_the_string_error_finder():
    assert string_results("fn f() -> Result<BTreeMap<String, String>, Error> {}") == []
    assert string_results("fn f() -> Result<Vec<u8>, &'static str> {}") == ["Result<Vec<u8>, &'static str>"]


def test_every_module_opens_with_a_doc_comment():
    missing = []
    for path in all_sources():
        with open(path, encoding="utf-8") as f:
            first = next((l for l in f if l.strip()), "")
        if not first.startswith("//!"):
            missing.append(os.path.relpath(path, ROOT))
    assert missing == []


def test_shared_crates_sit_below_the_services():
    names = dict(crates())
    services = {n for d, n in names.items() if d.startswith("services/")}
    tooling = {n for d, n in names.items() if d.startswith("tests/")}
    wrong = []
    for d, n in names.items():
        if not d.startswith("shared/"):
            continue
        with open(os.path.join(ROOT, d, "Cargo.toml"), "rb") as f:
            manifest = tomllib.load(f)
        deps = set(manifest.get("dependencies", {})) | set(manifest.get("build-dependencies", {}))
        wrong.extend(f"{n} depends on {x}" for x in sorted(deps & (services | tooling)))
    assert wrong == []
    assert all(d.startswith(("shared/", "services/", "tests/")) for d in names)


# ---- README and docs ----------------------------------------------------------------------------


def slug(heading):
    """GitHub's anchor of a heading."""
    s = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    out, seen = set(), {}
    in_code = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            m = None if in_code else re.match(r"#{1,6}\s+(.*)", line)
            if m:
                base = slug(m.group(1))
                n = seen.get(base, 0)
                seen[base] = n + 1
                out.add(base if n == 0 else f"{base}-{n}")
    return out


def markdown_files():
    yield os.path.join(ROOT, "README.md")
    for d, _, files in os.walk(os.path.join(ROOT, "docs")):
        yield from (os.path.join(d, f) for f in sorted(files) if f.endswith(".md"))


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for md in markdown_files():
        with open(md, encoding="utf-8") as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(md), file)) if file else md
            where = f"{os.path.relpath(md, ROOT)}: {target}"
            if not os.path.exists(path):
                broken.append(where + " (no such file)")
            elif anchor and path.endswith(".md") and anchor not in anchors(path):
                broken.append(where + " (no such heading)")
    assert broken == []


def test_the_readme_is_short_and_starts_with_both_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines"
    head = "\n".join(lines[:120])
    assert "just run" in head and "just test" in head
