#!/usr/bin/env bash
# CI's hardening stage (.ci/run calls it after the README's test command); any report fails it:
#  1. the extension built with AddressSanitizer + UndefinedBehaviorSanitizer into its own
#     venv, and the whole test suite (stress included) run against that build;
#  2. LeakSanitizer over tools/stress_memcheck.py on that build, CPython's and cffi's own
#     leaks suppressed (tools/lsan-python.supp), so only blocks our C code lost are reported;
#  3. the same workload under valgrind memcheck on the normal build (the venv of the
#     README's test command): invalid accesses, uninitialised reads, definite leaks.
# Usage: bash ci/harden.sh [path of the normal build's venv, default .venv]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NORMAL_VENV=${1:-.venv}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g"
WARNINGS="-Wall -Wextra -Werror"
START=$SECONDS

stage() { echo "== harden: $* ($((SECONDS - START)) s)"; }

if ! command -v valgrind >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
LIBASAN=$(gcc -print-file-name=libasan.so)
[ -e "$LIBASAN" ] || { echo "harden: gcc has no libasan.so" >&2; exit 1; }
# libstdc++ preloaded too: ASan intercepts __cxa_throw only if it is there at start-up
# (matplotlib's C++ extensions throw; without it ASan stops with "real___cxa_throw != 0").
PRELOAD="$LIBASAN $(gcc -print-file-name=libstdc++.so)"

stage "sanitized build"
# A clean copy: a build/ left by the normal install would be reused without the flags.
mkdir "$WORK/src"
tar -C "$ROOT" --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude='*.egg-info' \
  -cf - . | tar -C "$WORK/src" -xf -
python3 -m venv "$WORK/venv"
# --no-cache-dir: never a wheel pip cached from an earlier, unsanitized build
PYAUTOGRAD_CFLAGS="$WARNINGS $SANITIZE" PYAUTOGRAD_LDFLAGS="-fsanitize=address,undefined" \
  "$WORK/venv/bin/pip" install -q --no-cache-dir "$WORK/src[test,viz,examples]" torch==2.13.0
SO=$(find "$WORK/venv" -path '*pyautograd/_ag*.so' | head -1)
# grep without -q: it reads all of ldd's output, so ldd never dies of SIGPIPE (under
# pipefail, a failed check whenever grep happened to exit first)
ldd "$SO" | grep libasan >/dev/null || { echo "harden: '$SO' is not built with ASan" >&2; exit 1; }

stage "test suite on the sanitized build"
# --capture=sys: sanitizer reports go to fd 2, which pytest would otherwise swallow on abort.
LD_PRELOAD="$PRELOAD" \
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
PYAUTOGRAD_SANITIZED=1 \
  "$WORK/venv/bin/pytest" -q --capture=sys -p no:cacheprovider

stage "LeakSanitizer on the C core"
LD_PRELOAD="$PRELOAD" \
ASAN_OPTIONS=detect_leaks=1:malloc_context_size=4:halt_on_error=1 \
LSAN_OPTIONS="suppressions=$ROOT/tools/lsan-python.supp:print_suppressions=0" \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$WORK/venv/bin/python" tools/stress_memcheck.py 3

stage "valgrind memcheck on the normal build"
PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
  --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --suppressions="$ROOT/tools/valgrind-python.supp" \
  "$NORMAL_VENV/bin/python" tools/stress_memcheck.py 2

stage "done, no reports"
