#!/usr/bin/env bash
# The demo: markdown pipelines. Runs examples/csv-analysis.md (a data analysis that generates
# its own CSV), shows the report it became, then a two-turn session where the second turn
# starts where the first ended. The examples are copied first, so the repository stays clean.
set -euo pipefail
up=$(realpath "${1:-build/upstream}")
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/upstream-demo.XXXXXX)
session="demo-research-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cleanup() { "$up" session rm "$session" >/dev/null 2>&1 || true; }
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

cp -r examples "$work/"
cd "$work"

run "$up" run examples/csv-analysis.md
say "sed -n '/## Analyse it/,/## Write the report/p' examples/csv-analysis.md   # the document is now its own report"
sed -n '/## Analyse it/,/## Write the report/p' examples/csv-analysis.md | tail -n 12

run "$up" run --session "$session" examples/research/1-collect.md
run "$up" run --session "$session" examples/research/2-analyse.md
run "$up" session show "$session"
run "$up" context show "$session"
run "$up" session rm "$session"
trap - EXIT
printf '\nthe documents the demo ran are in %s\n' "$work/examples"
