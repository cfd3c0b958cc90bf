#!/usr/bin/env python3
"""Instructions per request by component, from callgrind profiles (`just profile`).

Usage: callgrind_table.py REQUESTS LABEL=FILE[,FILE…] …  (one argument per path measured;
each FILE a profile part dumped after the path's requests, demangled names). Prints a Markdown
table: instructions and malloc calls per request, and the share of each component, then each
path's most expensive functions (self cost).
"""
import collections
import re
import sys

COMPONENTS = [
    "llmrouter", "HTTP", "JSON", "async runtime", "Redis client", "tracing, logs, metrics", "boa (JavaScript)",
    "std, collections", "malloc/free", "memcpy/memset", "libc other", "nginx", "redis-server", "other",
]
CRATES = {
    "HTTP": {"actix_http", "actix_web", "actix_router", "awc", "actix_codec", "actix_server", "actix_service",
             "actix_utils", "actix", "actix_rt", "h2", "http", "httparse", "httpdate", "mime", "url",
             "percent_encoding", "form_urlencoded", "regex_lite", "language_tags"},
    "JSON": {"serde_json", "serde", "serde_core", "serde_path_to_error", "ryu", "itoa", "memchr"},
    "async runtime": {"tokio", "tokio_util", "mio", "futures_util", "futures_core", "futures_channel",
                      "futures_task", "futures_lite", "futures_concurrency", "local_waker", "slab", "parking_lot",
                      "parking_lot_core"},
    "Redis client": {"redis", "combine", "deadpool", "deadpool_redis"},
    "tracing, logs, metrics": {"tracing", "tracing_core", "tracing_subscriber", "tracing_opentelemetry",
                               "opentelemetry", "opentelemetry_sdk", "prometheus", "nu_ansi_term", "sharded_slab"},
    "std, collections": {"core", "alloc", "std", "hashbrown", "bytes", "smallvec", "indexmap", "bytestring",
                         "foldhash", "uuid", "rand", "rand_core", "rand_chacha", "chacha20", "getrandom", "__rustc"},
}


def component(fn: str, obj: str) -> str:
    if re.search(r"(^|_)(malloc|free|realloc|calloc)|^_int_|^unlink_chunk|^tcache", fn) and "libc" in obj:
        return "malloc/free"
    if re.match(r"^__(mem|str)\w+|^mem(cpy|move|set|cmp)$", fn) and "libc" in obj:
        return "memcpy/memset"
    if "libc" in obj or "ld-linux" in obj:
        return "libc other"
    if "nginx" in obj:
        return "nginx"
    if "redis-server" in obj or "redis-check" in obj:
        return "redis-server"
    name = fn
    for prefix in ("core::ptr::drop_in_place<", "<"):
        while name.startswith(prefix):
            name = name[len(prefix):]
    m = re.match(r"&?(?:mut )?(?:dyn )?([a-z_][a-z0-9_]*)::", name)
    if not m:
        return "other"
    crate = m.group(1)
    if crate.startswith("llmr") or crate == "llmrouter":
        return "llmrouter"
    if crate.startswith("boa_"):
        return "boa (JavaScript)"
    for comp, crates in CRATES.items():
        if crate in crates:
            return comp
    return "other"


def parse(path: str):
    """Self cost per (object, function), and malloc calls."""
    cost, mallocs = collections.Counter(), 0
    obj, fn, cfn, after_call = "", "", "", False
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("ob="):
                obj = line[3:]
            elif line.startswith("fn="):
                fn, after_call = line[3:], False
            elif line.startswith("cfn="):
                cfn = line[4:]
            elif line.startswith("calls="):
                after_call = True
                if cfn == "malloc":
                    mallocs += int(line[6:].split()[0])
            elif line[:1].isdigit() or line[:1] in "+-*":
                parts = line.split()
                if len(parts) >= 2 and not after_call:
                    cost[(obj, fn)] += int(parts[1])
                after_call = False
    return cost, mallocs


def main() -> None:
    n = int(sys.argv[1])
    rows, tops = [], []
    for arg in sys.argv[2:]:
        label, files = arg.split("=", 1)
        cost, mallocs = collections.Counter(), 0
        for path in filter(None, files.split(",")):
            c, m = parse(path)
            cost.update(c)
            mallocs += m
        total = sum(cost.values())
        by = collections.Counter()
        for (obj, fn), v in cost.items():
            by[component(fn, obj)] += v
        shares = " | ".join(f"{100 * by[c] / max(total, 1):.0f}%" for c in COMPONENTS)
        rows.append(f"| {label} | {total / n:,.0f} | {mallocs / n:,.0f} | {shares} |")
        top = collections.Counter()
        for (_, fn), v in cost.items():
            top[fn] += v
        tops.append((label, [(v / n, fn) for fn, v in top.most_common(8)]))
    print("| path | instructions per request | malloc calls per request | " + " | ".join(COMPONENTS) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in COMPONENTS) + " |")
    print("\n".join(rows))
    for label, top in tops:
        print(f"\n{label}, most expensive functions (self instructions per request):\n")
        for v, fn in top:
            print(f"- {v:,.0f} `{fn[:140]}`")


if __name__ == "__main__":
    main()
